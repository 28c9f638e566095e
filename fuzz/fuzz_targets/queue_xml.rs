//! The queue bridge's reading of the Queue service's XML answers (Get
//! Messages, Put Message, errors), on any bytes; and, for any message text,
//! the list the service would answer with that text escaped reads back as
//! exactly that text (what the sender put is what is forwarded).
#![no_main]
use cmk_ingest_bridge::storage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = storage::parse_messages(data);
    let _ = storage::parse_put(data);
    let _ = storage::parse_error(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage>\
         <MessageId>m-1</MessageId><InsertionTime>Fri, 09 Oct 2009 21:04:30 GMT</InsertionTime>\
         <ExpirationTime>Fri, 16 Oct 2009 21:04:30 GMT</ExpirationTime>\
         <PopReceipt>AgAAAAMAAAAAAAAA</PopReceipt><TimeNextVisible>Fri, 09 Oct 2009 23:29:20 GMT</TimeNextVisible>\
         <DequeueCount>1</DequeueCount><MessageText>{}</MessageText></QueueMessage></QueueMessagesList>",
        storage::escape(text)
    );
    let got = storage::parse_messages(xml.as_bytes()).expect("a well-formed list parses");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, text, "the text changed on its way through XML");
    assert_eq!(got[0].id, "m-1");
});
