//! Resource links: the same value feeds the request URL and the signature.

/// The kinds of Cosmos DB resources this crate addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// `dbs`
    Databases,
    /// `colls`
    Collections,
    /// `docs`
    Documents,
    /// `pkranges`
    PartitionKeyRanges,
}

impl ResourceType {
    /// The resource type as it appears in paths and in the string to sign.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Databases => "dbs",
            ResourceType::Collections => "colls",
            ResourceType::Documents => "docs",
            ResourceType::PartitionKeyRanges => "pkranges",
        }
    }
}

/// What one request addresses: the resource type and link that are signed, and
/// the percent-encoded URL path that is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Resource type that goes into the string to sign.
    pub resource_type: ResourceType,
    /// Resource link as the service signs it: ids as written, not encoded.
    pub link: String,
    /// Path for the request URL (ids percent-encoded), starting with `/`.
    pub path: String,
}

/// A container (collection) inside a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLink {
    database: String,
    container: String,
}

impl ContainerLink {
    /// Names a container; ids are kept exactly as given.
    pub fn new(database: impl Into<String>, container: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            container: container.into(),
        }
    }

    /// The database id.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The container id.
    pub fn container(&self) -> &str {
        &self.container
    }

    fn link(&self) -> String {
        ["dbs/", &self.database, "/colls/", &self.container].concat()
    }

    fn path(&self) -> String {
        [
            "/dbs/",
            &encode_segment(&self.database),
            "/colls/",
            &encode_segment(&self.container),
        ]
        .concat()
    }

    /// The documents feed of this container (create, upsert, query, batch).
    pub fn documents(&self) -> Target {
        Target {
            resource_type: ResourceType::Documents,
            link: self.link(),
            path: [&self.path(), "/docs"].concat(),
        }
    }

    /// One document (read, replace, delete).
    pub fn document(&self, id: &str) -> Target {
        Target {
            resource_type: ResourceType::Documents,
            link: [&self.link(), "/docs/", id].concat(),
            path: [&self.path(), "/docs/", &encode_segment(id)].concat(),
        }
    }

    /// The container resource itself.
    pub fn itself(&self) -> Target {
        Target {
            resource_type: ResourceType::Collections,
            link: self.link(),
            path: self.path(),
        }
    }

    /// The partition key ranges feed of this container.
    pub fn partition_key_ranges(&self) -> Target {
        Target {
            resource_type: ResourceType::PartitionKeyRanges,
            link: self.link(),
            path: format!("{}/pkranges", self.path()),
        }
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved
/// characters, so spaces and non-ASCII ids reach the service intact.
pub(crate) fn encode_segment(s: &str) -> String {
    crate::percent::percent_encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_and_item_links() {
        let c = ContainerLink::new("db", "items");
        let feed = c.documents();
        assert_eq!(feed.resource_type.as_str(), "docs");
        assert_eq!(feed.link, "dbs/db/colls/items");
        assert_eq!(feed.path, "/dbs/db/colls/items/docs");
        let item = c.document("a");
        assert_eq!(item.link, "dbs/db/colls/items/docs/a");
        assert_eq!(item.path, "/dbs/db/colls/items/docs/a");
        assert_eq!(c.itself().resource_type.as_str(), "colls");
        assert_eq!(c.itself().link, "dbs/db/colls/items");
    }

    #[test]
    fn ids_with_spaces_and_unicode_are_signed_raw_and_sent_encoded() {
        let c = ContainerLink::new("my db", "größe");
        let t = c.document("a b+c");
        assert_eq!(t.link, "dbs/my db/colls/größe/docs/a b+c");
        assert_eq!(t.path, "/dbs/my%20db/colls/gr%C3%B6%C3%9Fe/docs/a%20b%2Bc");
    }
}
