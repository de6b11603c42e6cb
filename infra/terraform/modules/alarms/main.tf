# alarms: the CloudWatch alarms of a p2pmesh deployment and where they go.
# Owns an SNS topic (optional e-mail subscription) and one metric alarm per
# watched thing: ALB 5xx and unhealthy hosts per target group, NLB unhealthy
# hosts, ECS CPU and memory per service, RUNNING tasks below a minimum (the
# game's raft quorum), Lambda errors and throttles, API Gateway WebSocket
# execution and integration errors, ElastiCache CPU and memory, RDS CPU and
# free storage. Every alarm notifies the topic when it fires and when it clears.

locals {
  alb_alarms = var.alb == null ? {} : merge(
    {
      "alb-5xx" = {
        description = "ALB answered 5xx itself (no healthy target, target reset or timeout)"
        namespace   = "AWS/ApplicationELB"
        metric      = "HTTPCode_ELB_5XX_Count"
        dimensions  = tomap({ LoadBalancer = var.alb.arn_suffix })
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = var.alb_5xx_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, tg in var.alb.target_groups : "alb-target-5xx-${k}" => {
        description = "Targets of ${k} answered 5xx"
        namespace   = "AWS/ApplicationELB"
        metric      = "HTTPCode_Target_5XX_Count"
        dimensions  = tomap({ LoadBalancer = var.alb.arn_suffix, TargetGroup = tg })
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = var.alb_5xx_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, tg in var.alb.target_groups : "alb-unhealthy-${k}" => {
        description = "Unhealthy targets in ${k} (GET /health failing)"
        namespace   = "AWS/ApplicationELB"
        metric      = "UnHealthyHostCount"
        dimensions  = tomap({ LoadBalancer = var.alb.arn_suffix, TargetGroup = tg })
        statistic   = "Maximum"
        comparison  = "GreaterThanThreshold"
        threshold   = 0
        missing     = "notBreaching"
      }
    },
  )

  nlb_alarms = var.nlb == null ? {} : {
    for k, tg in var.nlb.target_groups : "nlb-unhealthy-${k}" => {
      description = "Unhealthy targets in NLB target group ${k}"
      namespace   = "AWS/NetworkELB"
      metric      = "UnHealthyHostCount"
      dimensions  = tomap({ LoadBalancer = var.nlb.arn_suffix, TargetGroup = tg })
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 0
      missing     = "notBreaching"
    }
  }

  ecs_alarms = merge(
    {
      for k, s in var.ecs_services : "ecs-cpu-${k}" => {
        description = "CPU of ECS service ${s.service_name} is high"
        namespace   = "AWS/ECS"
        metric      = "CPUUtilization"
        dimensions  = tomap({ ClusterName = s.cluster_name, ServiceName = s.service_name })
        statistic   = "Average"
        comparison  = "GreaterThanThreshold"
        threshold   = var.ecs_cpu_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, s in var.ecs_services : "ecs-memory-${k}" => {
        description = "Memory of ECS service ${s.service_name} is high"
        namespace   = "AWS/ECS"
        metric      = "MemoryUtilization"
        dimensions  = tomap({ ClusterName = s.cluster_name, ServiceName = s.service_name })
        statistic   = "Average"
        comparison  = "GreaterThanThreshold"
        threshold   = var.ecs_memory_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, s in var.ecs_min_running_tasks : "ecs-running-${k}" => {
        description = "ECS service ${s.service_name} runs fewer than ${s.min_tasks} tasks"
        namespace   = "ECS/ContainerInsights"
        metric      = "RunningTaskCount"
        dimensions  = tomap({ ClusterName = s.cluster_name, ServiceName = s.service_name })
        statistic   = "Minimum"
        comparison  = "LessThanThreshold"
        threshold   = s.min_tasks
        missing     = "breaching"
      }
    },
  )

  lambda_alarms = merge(
    {
      for k, fn in var.lambda_function_names : "lambda-errors-${k}" => {
        description = "Lambda ${fn} invocations failed"
        namespace   = "AWS/Lambda"
        metric      = "Errors"
        dimensions  = tomap({ FunctionName = fn })
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = var.lambda_errors_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, fn in var.lambda_function_names : "lambda-throttles-${k}" => {
        description = "Lambda ${fn} was throttled"
        namespace   = "AWS/Lambda"
        metric      = "Throttles"
        dimensions  = tomap({ FunctionName = fn })
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = 0
        missing     = "notBreaching"
      }
    },
  )

  apigw_alarms = merge(
    {
      for k, a in var.websocket_apis : "apigw-execution-errors-${k}" => {
        description = "API Gateway could not call the integration of ${k} (5xx-class)"
        namespace   = "AWS/ApiGateway"
        metric      = "ExecutionError"
        dimensions  = tomap({ ApiId = a.api_id, Stage = a.stage })
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = var.apigw_errors_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, a in var.websocket_apis : "apigw-integration-errors-${k}" => {
        description = "The integration of ${k} answered 4xx/5xx"
        namespace   = "AWS/ApiGateway"
        metric      = "IntegrationError"
        dimensions  = tomap({ ApiId = a.api_id, Stage = a.stage })
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = var.apigw_errors_threshold
        missing     = "notBreaching"
      }
    },
  )

  redis_alarms = merge(
    {
      for id in var.redis_cache_cluster_ids : "redis-cpu-${id}" => {
        description = "ElastiCache node ${id}: CPU is high"
        namespace   = "AWS/ElastiCache"
        metric      = "CPUUtilization"
        dimensions  = tomap({ CacheClusterId = id })
        statistic   = "Average"
        comparison  = "GreaterThanThreshold"
        threshold   = var.redis_cpu_threshold
        missing     = "notBreaching"
      }
    },
    {
      for id in var.redis_cache_cluster_ids : "redis-memory-${id}" => {
        description = "ElastiCache node ${id}: memory is filling up"
        namespace   = "AWS/ElastiCache"
        metric      = "DatabaseMemoryUsagePercentage"
        dimensions  = tomap({ CacheClusterId = id })
        statistic   = "Average"
        comparison  = "GreaterThanThreshold"
        threshold   = var.redis_memory_threshold
        missing     = "notBreaching"
      }
    },
  )

  rds_alarms = merge(
    {
      for k, id in var.rds_instance_ids : "rds-cpu-${k}" => {
        description = "RDS ${id}: CPU is high"
        namespace   = "AWS/RDS"
        metric      = "CPUUtilization"
        dimensions  = tomap({ DBInstanceIdentifier = id })
        statistic   = "Average"
        comparison  = "GreaterThanThreshold"
        threshold   = var.rds_cpu_threshold
        missing     = "notBreaching"
      }
    },
    {
      for k, id in var.rds_instance_ids : "rds-free-storage-${k}" => {
        description = "RDS ${id}: free storage is low"
        namespace   = "AWS/RDS"
        metric      = "FreeStorageSpace"
        dimensions  = tomap({ DBInstanceIdentifier = id })
        statistic   = "Minimum"
        comparison  = "LessThanThreshold"
        threshold   = var.rds_free_storage_bytes
        missing     = "breaching"
      }
    },
  )

  alarms = merge(
    local.alb_alarms,
    local.nlb_alarms,
    local.ecs_alarms,
    local.lambda_alarms,
    local.apigw_alarms,
    local.redis_alarms,
    local.rds_alarms,
  )
}

resource "aws_sns_topic" "alarms" {
  name = "${var.name}-alarms"
  tags = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each = local.alarms

  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  period              = var.period
  evaluation_periods  = var.evaluation_periods
  datapoints_to_alarm = var.datapoints_to_alarm
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}
