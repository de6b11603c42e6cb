variable "name" {
  description = "Name of the load balancer and prefix of its target groups (at most 32 characters)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]$", var.name))
    error_message = "name: 2-32 letters, digits or hyphens, not starting or ending with a hyphen."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancer and its target groups."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the load balancer (public subnets in at least two Availability Zones for an internet-facing ALB)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "An ALB needs subnets in at least two Availability Zones."
  }
}

variable "internal" {
  description = "Create an internal load balancer instead of an internet-facing one."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate ARN for the HTTPS listener on 443. When set, HTTP on 80 redirects to HTTPS; when null, the routes are served on HTTP 80 only."
  type        = string
  default     = null
}

variable "additional_certificate_arns" {
  description = "More ACM certificates for the HTTPS listener (SNI), e.g. one per role host name."
  type        = list(string)
  default     = []
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "ingress_cidrs" {
  description = "IPv4 CIDRs allowed to reach the listeners (80 and, with a certificate, 443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "idle_timeout" {
  description = "Idle timeout in seconds, upgraded WebSocket connections included. Keep it above ws.ping_interval (25 s, so sockets stay open) and below http.keepalive_timeout (75 s, so the ALB never reuses a connection p2pmesh is closing: 502)."
  type        = number
  default     = 60

  validation {
    condition     = var.idle_timeout >= 1 && var.idle_timeout <= 4000
    error_message = "idle_timeout must be between 1 and 4000 seconds."
  }
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion."
  type        = bool
  default     = false
}

variable "access_logs_bucket" {
  description = "S3 bucket for ALB access logs (its policy must allow the regional ELB account). null: no access logs."
  type        = string
  default     = null
}

variable "targets" {
  description = <<-EOT
    Target groups (type ip, HTTP) by a static key such as the role name. Each is
    health-checked with GET health_check_path (default /health, answered by every
    p2pmesh role without touching its dependencies) and routed to by a listener
    rule when host_headers or path_patterns are given; rules are ordered by
    priority (default 100 + 10 x the key's position in sorted order).
  EOT
  type = map(object({
    port                  = number
    health_check_path     = optional(string, "/health")
    health_check_matcher  = optional(string, "200")
    health_check_interval = optional(number, 15)
    healthy_threshold     = optional(number, 2)
    unhealthy_threshold   = optional(number, 3)
    deregistration_delay  = optional(number, 30)
    host_headers          = optional(list(string), [])
    path_patterns         = optional(list(string), [])
    priority              = optional(number)
  }))

  validation {
    condition     = alltrue([for t in values(var.targets) : t.deregistration_delay >= 0 && t.deregistration_delay <= 3600])
    error_message = "deregistration_delay must be between 0 and 3600 seconds (keep it at most the task's stopTimeout, 30)."
  }

  validation {
    condition     = alltrue([for t in values(var.targets) : length(t.host_headers) <= 5 && length(t.path_patterns) <= 5])
    error_message = "A listener rule condition takes at most 5 host headers and 5 path patterns."
  }
}

variable "default_target" {
  description = "Key of the target that gets every request no rule matches. null: 404."
  type        = string
  default     = null
}

variable "deny_path_patterns" {
  description = "Paths answered 403 by the load balancer itself before any route (p2pmesh serves Prometheus /metrics on the main port; keep it internal)."
  type        = list(string)
  default     = ["/metrics"]

  validation {
    condition     = length(var.deny_path_patterns) <= 5
    error_message = "At most 5 deny path patterns (one rule condition)."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
