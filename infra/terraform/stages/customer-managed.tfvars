# Stage two: Cosmos DB, Storage, node disks and etcd under customer keys; the
# app seals protected fields under its HSM key; Cosmos DB takes Entra ID only.
# On a fresh estate, or after the migration (infra/README.md, "Stage switch
# on a populated estate"). Applied to a populated stage-one estate the plan
# stops at the Cosmos DB account (prevent_destroy) and changes nothing.
encryption = "customer-managed"
profile    = "production"
