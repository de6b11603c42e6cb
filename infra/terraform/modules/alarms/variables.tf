variable "name" {
  description = "Prefix of the SNS topic and of every alarm name."
  type        = string
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (the address must confirm the subscription). null: no subscription."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must look like an e-mail address."
  }
}

variable "period" {
  description = "Period of every alarm, in seconds."
  type        = number
  default     = 60
}

variable "evaluation_periods" {
  description = "Periods an alarm looks at; it fires when datapoints_to_alarm of them breach."
  type        = number
  default     = 5
}

variable "datapoints_to_alarm" {
  description = "Breaching periods (of evaluation_periods) that fire an alarm."
  type        = number
  default     = 3
}

variable "alb" {
  description = "Application Load Balancer to watch: its ARN suffix and its target groups' ARN suffixes by a static key. null: none."
  type = object({
    arn_suffix    = string
    target_groups = map(string)
  })
  default = null
}

variable "nlb" {
  description = "Network Load Balancer to watch (unhealthy targets per target group). null: none."
  type = object({
    arn_suffix    = string
    target_groups = map(string)
  })
  default = null
}

variable "alb_5xx_threshold" {
  description = "5xx answers per period (load balancer's own, and per target group from the targets) that breach."
  type        = number
  default     = 10
}

variable "ecs_services" {
  description = "ECS services to watch for CPU and memory, by a static key."
  type = map(object({
    cluster_name = string
    service_name = string
  }))
  default = {}
}

variable "ecs_cpu_threshold" {
  description = "Average service CPU utilization (%) that breaches."
  type        = number
  default     = 85
}

variable "ecs_memory_threshold" {
  description = "Average service memory utilization (%) that breaches."
  type        = number
  default     = 85
}

variable "ecs_min_running_tasks" {
  description = "Services that must keep a minimum of RUNNING tasks (the game's raft quorum: 3), by a static key. Uses Container Insights (enable it on the cluster)."
  type = map(object({
    cluster_name = string
    service_name = string
    min_tasks    = number
  }))
  default = {}
}

variable "lambda_function_names" {
  description = "Lambda functions to watch for errors and throttles, by a static key."
  type        = map(string)
  default     = {}
}

variable "lambda_errors_threshold" {
  description = "Function errors per period that breach."
  type        = number
  default     = 5
}

variable "websocket_apis" {
  description = "API Gateway WebSocket stages to watch for execution (5xx-class) and integration errors, by a static key."
  type = map(object({
    api_id = string
    stage  = string
  }))
  default = {}
}

variable "apigw_errors_threshold" {
  description = "ExecutionError or IntegrationError count per period that breaches (integration errors include $connect refusals: 401, 403)."
  type        = number
  default     = 10
}

variable "redis_cache_cluster_ids" {
  description = "ElastiCache node ids to watch for CPU and memory."
  type        = list(string)
  default     = []
}

variable "redis_cpu_threshold" {
  description = "ElastiCache host CPU utilization (%) that breaches."
  type        = number
  default     = 75
}

variable "redis_memory_threshold" {
  description = "ElastiCache DatabaseMemoryUsagePercentage that breaches."
  type        = number
  default     = 80
}

variable "rds_instance_ids" {
  description = "RDS instances to watch for CPU and free storage, by a static key."
  type        = map(string)
  default     = {}
}

variable "rds_cpu_threshold" {
  description = "RDS CPU utilization (%) that breaches."
  type        = number
  default     = 80
}

variable "rds_free_storage_bytes" {
  description = "RDS FreeStorageSpace (bytes) below which the alarm fires."
  type        = number
  default     = 2147483648
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
