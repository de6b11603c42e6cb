variable "name" {
  description = "Name of the web ACL (and prefix of its metric names)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,128}$", var.name))
    error_message = "name: 1-128 letters, digits, hyphens or underscores."
  }
}

variable "resource_arns" {
  description = "Regional resources to protect, by a static key (the ALB)."
  type        = map(string)
  default     = {}
}

variable "rate_limit" {
  description = "Requests one client IP may send per 5-minute window before it is blocked (a WebSocket counts once, at its upgrade)."
  type        = number
  default     = 500

  validation {
    condition     = var.rate_limit >= 10 && var.rate_limit <= 2000000000
    error_message = "rate_limit must be between 10 and 2,000,000,000 (WAF limits)."
  }
}

variable "rate_limit_action" {
  description = "What the rate-based rule does to a client over the limit: block, or count (observe only)."
  type        = string
  default     = "block"

  validation {
    condition     = contains(["block", "count"], var.rate_limit_action)
    error_message = "rate_limit_action must be block or count."
  }
}

variable "managed_rule_groups" {
  description = "AWS managed rule groups evaluated after the rate rule (vendor AWS), e.g. [\"AWSManagedRulesAmazonIpReputationList\"]. Empty by default: the common rule set inspects bodies and can refuse legitimate API calls."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
