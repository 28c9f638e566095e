# Settings of the operations view (monitoring.tf). Thresholds are the alert
# rules' own; the runbook (infra/README.md, "Alerts") says what each means.

variable "alert_action_group_id" {
  description = "Resource id of an existing action group every alert notifies. Null: an action group is created here from alert_email_addresses."
  type        = string
  default     = null
}

variable "alert_email_addresses" {
  description = "Email receivers of the action group created when alert_action_group_id is null."
  type        = list(string)
  default     = []
}

variable "alert_queue_age_secs" {
  description = "Queue age alert: a message reaches the bridge older than this (seconds since it was put)."
  type        = number
  default     = 600
}

variable "alert_server_error_percent" {
  description = "5xx alert: share of deliveries (push and queue) answered 5xx in 5 minutes, in percent."
  type        = number
  default     = 5
}

variable "alert_cosmos_throttled_per_5m" {
  description = "Sustained 429 alert: Cosmos DB answers 429 more often than this in each of three consecutive 5-minute windows."
  type        = number
  default     = 20
}

variable "alert_hsm_latency_ms" {
  description = "Managed HSM latency alert: average ServiceApiLatency above this over 5 minutes, in milliseconds."
  type        = number
  default     = 500
}
