variable "name" {
  description = "Name of the Lambda function (also the default API and table name prefix), e.g. p2pmesh-signaling-prod."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,52}$", var.name))
    error_message = "name: 1-52 letters, digits, hyphens or underscores (room is kept for the suffixes of the role and table names)."
  }
}

variable "api_name" {
  description = "Name of the API Gateway WebSocket API. Defaults to name."
  type        = string
  default     = null
}

variable "stage_name" {
  description = "API Gateway stage; the WebSocket URL ends with /<stage_name>."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,128}$", var.stage_name))
    error_message = "stage_name: letters, digits, hyphens and underscores."
  }
}

variable "zip_path" {
  description = "Path of the function zip built by `make lambda-zip` (infra/lambda/package.sh): bootstrap, bin/p2pmesh and lib/ at its root, built on the same architecture as architecture."
  type        = string
}

variable "architecture" {
  description = "Instruction set of the function: arm64 (Graviton) or x86_64. Must match the binary inside the zip."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "runtime" {
  description = "Lambda runtime: the OS-only runtime that runs ./bootstrap."
  type        = string
  default     = "provided.al2023"
}

variable "handler" {
  description = "Function handler setting. Custom runtimes do not interpret it; p2pmesh would read it as $_HANDLER, which app_handler overrides."
  type        = string
  default     = "bootstrap"
}

variable "app_handler" {
  description = "p2pmesh handler the runtime runs (lambda.handler, exported as P2PMESH_LAMBDA_HANDLER so it does not depend on the function's handler setting)."
  type        = string
  default     = "signaling"
}

variable "timeout" {
  description = "Function timeout in seconds (API Gateway cuts integrations at 29 s anyway)."
  type        = number
  default     = 30

  validation {
    condition     = var.timeout >= 1 && var.timeout <= 900
    error_message = "timeout must be between 1 and 900 seconds."
  }
}

variable "memory_size" {
  description = "Function memory in MB."
  type        = number
  default     = 512

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size must be between 128 and 10240 MB."
  }
}

variable "reserved_concurrent_executions" {
  description = "Reserved concurrency of the function (-1: unreserved)."
  type        = number
  default     = -1
}

variable "log_level" {
  description = "p2pmesh log.level of the function (debug, info, warn, error)."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be debug, info, warn or error."
  }
}

variable "emf_metrics" {
  description = "Print the counters as CloudWatch Embedded Metric Format lines (metrics.emf)."
  type        = bool
  default     = true
}

variable "environment" {
  description = "More environment variables of the function (P2PMESH_<KEY> names, e.g. P2PMESH_ORIGIN_ALLOW). Lambda environment variables are readable with lambda:GetFunctionConfiguration: no secrets here."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k in keys(var.environment) :
      !can(regex("(SECRET|PASSWORD|PASSWD|AUTH_TOKEN|API_KEY|KEY_PEM|REDIS_URL|DATABASE_URL)$", upper(k)))
    ])
    error_message = "environment holds a secret-looking name; Lambda environment variables are not secret."
  }
}

variable "log_retention_days" {
  description = "Retention of the function's and the stage's log groups, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "table_name" {
  description = "DynamoDB connection table (CONNECTIONS_TABLE). Defaults to <name>-connections."
  type        = string
  default     = null
}

variable "point_in_time_recovery" {
  description = "Enable point-in-time recovery of the connection table (its rows live 11 minutes; off saves a little)."
  type        = bool
  default     = false
}

variable "route_selection_expression" {
  description = "Route selection expression of the API. Only $connect, $disconnect and $default exist, so every message reaches $default."
  type        = string
  default     = "$request.body.action"
}

variable "throttling_burst_limit" {
  description = "Stage default route burst limit (requests)."
  type        = number
  default     = 500
}

variable "throttling_rate_limit" {
  description = "Stage default route steady-state rate limit (requests per second)."
  type        = number
  default     = 1000
}

variable "execution_logging_level" {
  description = "API Gateway execution logging of the stage: OFF, ERROR or INFO (needs the account CloudWatch role)."
  type        = string
  default     = "ERROR"

  validation {
    condition     = contains(["OFF", "ERROR", "INFO"], var.execution_logging_level)
    error_message = "execution_logging_level must be OFF, ERROR or INFO."
  }
}

variable "manage_account_cloudwatch_role" {
  description = "Create the IAM role API Gateway uses to write logs and set it in this region's API Gateway account settings (one setting per account and region: turn off when another stack already manages it)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
