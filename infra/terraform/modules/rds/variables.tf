variable "identifier" {
  description = "DB instance identifier and prefix of the subnet group, parameter group, security group and secret."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,58}[a-z0-9]$", var.identifier))
    error_message = "identifier: lowercase letters, digits and hyphens, starting with a letter, at most 60 characters."
  }
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the DB subnet group (at least two Availability Zones)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "A DB subnet group needs subnets in at least two Availability Zones."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect on 5432, by a static key (the game service)."
  type        = map(string)
  default     = {}
}

variable "engine_version" {
  description = "PostgreSQL version (a major version picks the current minor)."
  type        = string
  default     = "15"
}

variable "parameter_group_family" {
  description = "Parameter group family matching engine_version."
  type        = string
  default     = "postgres15"
}

variable "instance_class" {
  description = "Instance class (Graviton burstable by default)."
  type        = string
  default     = "db.t4g.micro"
}

variable "allocated_storage" {
  description = "Storage in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.allocated_storage >= 20
    error_message = "gp3 storage starts at 20 GiB."
  }
}

variable "max_allocated_storage" {
  description = "Upper limit of storage autoscaling in GiB (0: off)."
  type        = number
  default     = 100
}

variable "storage_type" {
  description = "Storage type."
  type        = string
  default     = "gp3"
}

variable "db_name" {
  description = "Database created in the instance."
  type        = string
  default     = "p2pmesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name: lowercase letters, digits and underscores, starting with a letter."
  }
}

variable "username" {
  description = "Master user name (the URL uses it)."
  type        = string
  default     = "p2pmesh"
}

variable "password" {
  description = "Master password. It goes into the URL secret as is, so keep to letters and digits (random_password with special = false)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.password) >= 16 && can(regex("^[A-Za-z0-9]+$", var.password))
    error_message = "password must be at least 16 letters and digits."
  }
}

variable "sslmode" {
  description = "libpq sslmode in the URL: require encrypts without checking the RDS CA (which is not in system stores); verify-full also needs sslrootcert with the RDS bundle in the image."
  type        = string
  default     = "require"

  validation {
    condition     = contains(["require", "verify-ca", "verify-full"], var.sslmode)
    error_message = "sslmode must be require, verify-ca or verify-full (rds.force_ssl refuses plaintext)."
  }
}

variable "backup_retention_period" {
  description = "Days of automated backups."
  type        = number
  default     = 1
}

variable "multi_az" {
  description = "Run a standby in a second Availability Zone."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the instance from deletion."
  type        = bool
  default     = false
}

variable "skip_final_snapshot" {
  description = "Delete without a final snapshot."
  type        = bool
  default     = false
}

variable "performance_insights_enabled" {
  description = "Enable Performance Insights (7 days free)."
  type        = bool
  default     = false
}

variable "apply_immediately" {
  description = "Apply changes now instead of in the maintenance window."
  type        = bool
  default     = false
}

variable "url_secret_name" {
  description = "Name of the Secrets Manager secret that receives postgres://USER:PASSWORD@HOST:5432/DB?sslmode=... Defaults to <identifier>/database-url."
  type        = string
  default     = null
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted secret can be restored (0: delete at once)."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
