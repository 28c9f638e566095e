# Stage two: Cosmos DB, Storage, node disks and etcd under customer keys; the
# app seals protected fields under its HSM key; Cosmos DB takes Entra ID only.
encryption = "customer-managed"
profile    = "production"
