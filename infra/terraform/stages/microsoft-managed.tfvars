# Stage one: Microsoft-managed keys for Cosmos DB and Storage (the node disks
# use the HSM's disks-kek in both stages, so the cluster never changes at the
# switch), the app seals no fields, and the app signs Cosmos DB requests with
# the account key.
encryption = "microsoft-managed"
profile    = "development"
