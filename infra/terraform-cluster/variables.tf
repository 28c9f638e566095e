# From `terraform output` of infra/terraform: cluster_name, resource_group_name.
variable "subscription_id" {
  description = "Azure subscription of the estate."
  type        = string
}

variable "resource_group_name" {
  description = "The estate's resource group (infra/terraform output resource_group_name)."
  type        = string
}

variable "cluster_name" {
  description = "The AKS cluster (infra/terraform output cluster_name)."
  type        = string
}
