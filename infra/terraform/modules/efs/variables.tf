variable "name" {
  description = "Name tag and prefix of the file system and its security group."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the mount targets."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets that get a mount target (at most one per Availability Zone; the subnets of the tasks)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to mount over NFS (2049), by a static key (the chat service)."
  type        = map(string)
  default     = {}
}

variable "posix_uid" {
  description = "User id every access through the access point runs as (the image's p2pmesh user)."
  type        = number
  default     = 10001
}

variable "posix_gid" {
  description = "Group id every access through the access point runs as."
  type        = number
  default     = 10001
}

variable "root_directory" {
  description = "Directory the access point exposes as its root; created owned by posix_uid:posix_gid on first use."
  type        = string
  default     = "/p2pmesh-chat"

  validation {
    condition     = startswith(var.root_directory, "/") && var.root_directory != "/"
    error_message = "root_directory must be an absolute path other than /."
  }
}

variable "root_permissions" {
  description = "Mode of the root directory when the access point creates it."
  type        = string
  default     = "0750"
}

variable "throughput_mode" {
  description = "bursting, elastic or provisioned."
  type        = string
  default     = "elastic"
}

variable "transition_to_ia" {
  description = "Move files not read for this long to Infrequent Access (e.g. AFTER_30_DAYS); null: never. The SQLite database is read constantly and stays in Standard."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for encryption at rest (null: the AWS managed key)."
  type        = string
  default     = null
}

variable "backup" {
  description = "Enable AWS Backup's automatic daily backups of the file system."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
