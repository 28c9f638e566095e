# Stage one: Microsoft-managed keys everywhere, the app seals no fields, and
# the app signs Cosmos DB requests with the account key.
encryption = "microsoft-managed"
profile    = "development"
