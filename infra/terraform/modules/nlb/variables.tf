variable "name" {
  description = "Name of the network load balancer and prefix of its target groups (at most 32 characters)."
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
  description = "Subnets of the load balancer (public subnets for an internet-facing NLB). Cannot change without replacing the NLB."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "internal" {
  description = "Create an internal load balancer instead of an internet-facing one."
  type        = bool
  default     = false
}

variable "cross_zone" {
  description = "Enable cross-zone load balancing (a single on-demand tunnel task is reachable through every NLB address)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion."
  type        = bool
  default     = false
}

variable "listeners" {
  description = <<-EOT
    TCP listeners by a static key, each forwarding to its own ip target group on
    target_port (default: port). TCP passthrough, so the tunnel role terminates
    mTLS itself. Health checks: TCP on the traffic port, or HTTP GET
    health_check_path on health_check_port (the tunnel's plain-HTTP admin port
    8080 answers /health with 200, or 503 while draining).
  EOT
  type = map(object({
    port                   = number
    target_port            = optional(number)
    allowed_cidrs          = optional(list(string), ["0.0.0.0/0"])
    health_check_protocol  = optional(string, "TCP")
    health_check_port      = optional(string, "traffic-port")
    health_check_path      = optional(string)
    health_check_matcher   = optional(string, "200-399")
    health_check_interval  = optional(number, 10)
    healthy_threshold      = optional(number, 3)
    unhealthy_threshold    = optional(number, 3)
    deregistration_delay   = optional(number, 30)
    connection_termination = optional(bool, true)
    preserve_client_ip     = optional(bool, false)
  }))

  validation {
    condition     = alltrue([for l in values(var.listeners) : contains(["TCP", "HTTP", "HTTPS"], l.health_check_protocol)])
    error_message = "health_check_protocol must be TCP, HTTP or HTTPS."
  }

  validation {
    condition     = alltrue([for l in values(var.listeners) : l.health_check_protocol == "TCP" || l.health_check_path != null])
    error_message = "An HTTP or HTTPS health check needs health_check_path."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
