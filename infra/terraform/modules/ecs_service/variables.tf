variable "name" {
  description = "Name of the ECS service; also the default task definition family and the prefix of the IAM roles and security group."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$", var.name))
    error_message = "name: letters, digits, hyphens and underscores, at most 255 characters."
  }
}

variable "family" {
  description = "Task definition family. Defaults to name."
  type        = string
  default     = null
}

variable "role" {
  description = "p2pmesh role the container runs; exported as P2PMESH_ROLE (the image's ENTRYPOINT is p2pmesh)."
  type        = string

  validation {
    condition     = contains(["signaling", "chat", "tunnel", "game"], var.role)
    error_message = "role must be signaling, chat, tunnel or game (the lambda role runs in modules/lambda_ws)."
  }
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster the service runs in. The cluster must have the capacity provider named by capacity_provider associated."
  type        = string
}

variable "cluster_name" {
  description = "Name of that cluster (used for the Application Auto Scaling resource id)."
  type        = string
}

variable "image" {
  description = "Container image URI of p2pmesh (ECR), the same image for every role."
  type        = string
}

variable "container_name" {
  description = "Name of the p2pmesh container in the task definition."
  type        = string
  default     = "p2pmesh"
}

variable "cpu" {
  description = "Task CPU units (Fargate: 256, 512, 1024, 2048, 4096, 8192 or 16384)."
  type        = number
  default     = 256

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be a Fargate CPU value: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  description = "Task memory in MiB; must be a valid Fargate combination with cpu (256 CPU: 512, 1024 or 2048)."
  type        = number
  default     = 512

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880
    error_message = "memory must be between 512 and 122880 MiB."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the task: ARM64 (Graviton) or X86_64. The image is built for both."
  type        = string
  default     = "ARM64"

  validation {
    condition     = contains(["ARM64", "X86_64"], var.cpu_architecture)
    error_message = "cpu_architecture must be ARM64 or X86_64."
  }
}

variable "container_ports" {
  description = "TCP ports the p2pmesh container listens on (port mappings, awsvpc: host port = container port)."
  type        = list(number)

  validation {
    condition     = length(var.container_ports) > 0 && alltrue([for p in var.container_ports : p >= 1 && p <= 65535])
    error_message = "container_ports needs at least one port between 1 and 65535."
  }
}

variable "environment" {
  description = "Plain environment variables of the p2pmesh container (the seed names, or P2PMESH_<KEY>). P2PMESH_ROLE is added from role. Never put secret values here: use secrets."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k in keys(var.environment) :
      !can(regex("(SECRET|PASSWORD|PASSWD|AUTH_TOKEN|API_KEY|PROXY_AUTH|KEY_PEM|REDIS_URL|DATABASE_URL)$", upper(k)))
    ])
    error_message = "environment holds a secret-looking name (…SECRET, …PASSWORD, …KEY_PEM, …REDIS_URL, …DATABASE_URL, …): pass it through secrets so that it comes from Secrets Manager."
  }
}

variable "secrets" {
  description = "Environment variables of the p2pmesh container filled by ECS from Secrets Manager: name => secret ARN (optionally ARN:json-key:version-stage:version-id). The execution role may read exactly these secrets."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for v in values(var.secrets) : can(regex("^arn:[^:]+:secretsmanager:", v))])
    error_message = "Every secrets value must be a Secrets Manager secret ARN."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt those secrets (kms:Decrypt for the execution role). Empty when the secrets use the AWS managed key."
  type        = list(string)
  default     = []
}

variable "log_group_name" {
  description = "CloudWatch log group of the p2pmesh container (created here, awslogs driver)."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of every log group this module creates, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "stop_timeout" {
  description = "Seconds between SIGTERM and SIGKILL (stopTimeout). p2pmesh drains within shutdown.grace (25 s by default), so keep this above it."
  type        = number
  default     = 30

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "stop_timeout must be between 2 and 120 seconds (the Fargate maximum)."
  }
}

variable "health_check" {
  description = "Container health check of the p2pmesh container. The default runs the binary's own probe (GET /health on the admin or main port)."
  type = object({
    command      = optional(list(string), ["CMD", "p2pmesh", "--probe"])
    interval     = optional(number, 15)
    timeout      = optional(number, 5)
    retries      = optional(number, 3)
    start_period = optional(number, 30)
  })
  default = {}

  validation {
    condition = (
      var.health_check.interval >= 5 && var.health_check.interval <= 300 &&
      var.health_check.timeout >= 2 && var.health_check.timeout <= 60 &&
      var.health_check.retries >= 1 && var.health_check.retries <= 10 &&
      var.health_check.start_period >= 0 && var.health_check.start_period <= 300
    )
    error_message = "health_check: interval 5-300, timeout 2-60, retries 1-10, start_period 0-300 (ECS limits)."
  }
}

variable "nofile_limit" {
  description = "Soft and hard RLIMIT_NOFILE of the p2pmesh container (one descriptor per WebSocket connection)."
  type        = number
  default     = 65536
}

variable "readonly_root_filesystem" {
  description = "Mount the container's root file system read-only. Only with every writable path (the working directory /var/lib/p2pmesh) on a volume."
  type        = bool
  default     = false
}

variable "efs_volume" {
  description = "EFS access point mounted into the p2pmesh container (the chat role's SQLite database), with IAM authorization and TLS. null: none."
  type = object({
    file_system_id   = string
    file_system_arn  = string
    access_point_id  = string
    access_point_arn = string
    container_path   = string
  })
  default = null
}

variable "ephemeral_volumes" {
  description = "Names of task-local (Fargate ephemeral storage) volumes that containers can share through mount_points, e.g. the HLS directory of an nginx-rtmp sidecar."
  type        = list(string)
  default     = []
}

variable "mount_points" {
  description = "Mounts of ephemeral_volumes into the p2pmesh container."
  type = list(object({
    volume         = string
    container_path = string
    read_only      = optional(bool, false)
  }))
  default = []
}

variable "sidecars" {
  description = "Extra containers in the same task (e.g. nginx-rtmp beside the chat role). Each gets its own log group; with wait_for_main they start once the p2pmesh container is HEALTHY."
  type = list(object({
    name            = string
    image           = string
    essential       = optional(bool, true)
    container_ports = optional(list(number), [])
    environment     = optional(map(string), {})
    secrets         = optional(map(string), {})
    command         = optional(list(string))
    log_group_name  = string
    wait_for_main   = optional(bool, true)
    mount_points = optional(list(object({
      volume         = string
      container_path = string
      read_only      = optional(bool, false)
    })), [])
    health_check = optional(object({
      command      = list(string)
      interval     = optional(number, 30)
      timeout      = optional(number, 5)
      retries      = optional(number, 3)
      start_period = optional(number, 10)
    }))
  }))
  default = []
}

variable "desired_count" {
  description = "Number of tasks. With autoscaling or ignore_desired_count_changes this is only the initial count."
  type        = number
  default     = 1

  validation {
    condition     = var.desired_count >= 0
    error_message = "desired_count must be 0 or more."
  }
}

variable "ignore_desired_count_changes" {
  description = "Let something else own the running count after creation (start/stop scripts, the tunnel's wake Lambda). Implied by autoscaling."
  type        = bool
  default     = false
}

variable "capacity_provider" {
  description = "FARGATE or FARGATE_SPOT (interrupted with SIGTERM two minutes ahead; p2pmesh drains on SIGTERM)."
  type        = string
  default     = "FARGATE"

  validation {
    condition     = contains(["FARGATE", "FARGATE_SPOT"], var.capacity_provider)
    error_message = "capacity_provider must be FARGATE or FARGATE_SPOT."
  }
}

variable "platform_version" {
  description = "Fargate platform version."
  type        = string
  default     = "LATEST"
}

variable "vpc_id" {
  description = "VPC of the task's security group."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the tasks (private subnets with a NAT gateway or VPC endpoints for ECR, Logs and Secrets Manager)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "assign_public_ip" {
  description = "Give each task a public IP (only in public subnets without a NAT gateway)."
  type        = bool
  default     = false
}

variable "ingress_rules" {
  description = "Inbound TCP rules of the task security group, by a static key: port (to_port for a range) from a security group, a CIDR, or the group itself (self = true, e.g. the game role's raft and peer ports)."
  type = map(object({
    port                     = number
    to_port                  = optional(number)
    description              = optional(string)
    source_security_group_id = optional(string)
    cidr_ipv4                = optional(string)
    self                     = optional(bool, false)
  }))
  default = {}
}

variable "additional_security_group_ids" {
  description = "Other security groups attached to the tasks."
  type        = list(string)
  default     = []
}

variable "load_balancers" {
  description = "Target groups the service registers its tasks in, by a static key. container_name defaults to the p2pmesh container."
  type = map(object({
    target_group_arn = string
    container_port   = number
    container_name   = optional(string)
  }))
  default = {}
}

variable "health_check_grace_period_seconds" {
  description = "Seconds after a task starts during which failed load balancer health checks are ignored (only with load_balancers)."
  type        = number
  default     = 60
}

variable "deployment_minimum_healthy_percent" {
  description = "Lower limit of RUNNING tasks during a deployment, percent of desired_count (rounded up)."
  type        = number
  default     = 100
}

variable "deployment_maximum_percent" {
  description = "Upper limit of RUNNING plus PENDING tasks during a deployment, percent of desired_count (rounded down)."
  type        = number
  default     = 200
}

variable "deployment_circuit_breaker" {
  description = "ECS deployment circuit breaker: fail (and roll back) a deployment whose tasks never become healthy."
  type = object({
    enable   = optional(bool, true)
    rollback = optional(bool, true)
  })
  default = {}
}

variable "autoscaling" {
  description = "Target-tracking autoscaling of the desired count on average CPU and, when memory_target is set, memory. null: none."
  type = object({
    min_capacity       = number
    max_capacity       = number
    cpu_target         = optional(number, 70)
    memory_target      = optional(number)
    scale_in_cooldown  = optional(number, 300)
    scale_out_cooldown = optional(number, 60)
  })
  default = null

  validation {
    condition     = var.autoscaling == null ? true : var.autoscaling.min_capacity <= var.autoscaling.max_capacity
    error_message = "autoscaling.min_capacity must not exceed max_capacity."
  }
}

variable "task_role_policy_json" {
  description = "Extra IAM policy (JSON) for the task role, e.g. S3 access for the chat role's SQLite backups. null: none."
  type        = string
  default     = null
}

variable "enable_execute_command" {
  description = "Enable ECS Exec (adds the ssmmessages permissions to the task role)."
  type        = bool
  default     = false
}

variable "wait_for_steady_state" {
  description = "Make terraform apply wait until the service is stable."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
