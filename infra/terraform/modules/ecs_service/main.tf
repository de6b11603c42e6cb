# ecs_service: one p2pmesh role as an ECS Fargate service. Owns the task
# definition (p2pmesh container plus optional sidecars, awslogs, container
# health check, stopTimeout, secrets from Secrets Manager, optional EFS and
# task-local volumes), its log groups, the task security group and its rules,
# the execution and task IAM roles, the service (FARGATE or FARGATE_SPOT,
# rolling deployment with circuit breaker, target group attachments) and
# optional target-tracking autoscaling. The cluster is created by the caller.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

locals {
  family = coalesce(var.family, var.name)

  # P2PMESH_ROLE always names this module's role.
  environment = merge(var.environment, { P2PMESH_ROLE = var.role })

  ignore_desired_count = var.ignore_desired_count_changes || var.autoscaling != null

  sidecars = { for s in var.sidecars : s.name => s }

  # Secret references may carry ":json-key:version-stage:version-id"; the
  # execution role is granted the secrets themselves (the first 7 ARN fields).
  secret_refs = concat(values(var.secrets), flatten([for s in var.sidecars : values(s.secrets)]))
  secret_arns = distinct([for ref in local.secret_refs : join(":", slice(split(":", ref), 0, 7))])

  log_options = {
    "awslogs-region"        = data.aws_region.current.name
    "awslogs-stream-prefix" = "ecs"
  }

  main_mounts = concat(
    var.efs_volume == null ? [] : [{ sourceVolume = "efs", containerPath = var.efs_volume.container_path, readOnly = false }],
    [for m in var.mount_points : { sourceVolume = m.volume, containerPath = m.container_path, readOnly = m.read_only }],
  )

  # Empty lists are left out of the container definitions: ECS drops them,
  # and keeping them would show as a change on every plan.
  main_container = merge(
    {
      name         = var.container_name
      image        = var.image
      essential    = true
      portMappings = [for p in var.container_ports : { containerPort = p, hostPort = p, protocol = "tcp" }]
      environment  = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
      stopTimeout  = var.stop_timeout
      healthCheck = {
        command     = var.health_check.command
        interval    = var.health_check.interval
        timeout     = var.health_check.timeout
        retries     = var.health_check.retries
        startPeriod = var.health_check.start_period
      }
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { "awslogs-group" = aws_cloudwatch_log_group.main.name })
      }
      ulimits                = [{ name = "nofile", softLimit = var.nofile_limit, hardLimit = var.nofile_limit }]
      readonlyRootFilesystem = var.readonly_root_filesystem
    },
    length(var.secrets) == 0 ? {} : {
      secrets = [for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]
    },
    length(local.main_mounts) == 0 ? {} : { mountPoints = local.main_mounts },
  )

  sidecar_containers = [
    for s in var.sidecars : merge(
      {
        name        = s.name
        image       = s.image
        essential   = s.essential
        stopTimeout = var.stop_timeout
        logConfiguration = {
          logDriver = "awslogs"
          options   = merge(local.log_options, { "awslogs-group" = aws_cloudwatch_log_group.sidecar[s.name].name })
        }
      },
      length(s.container_ports) == 0 ? {} : {
        portMappings = [for p in s.container_ports : { containerPort = p, hostPort = p, protocol = "tcp" }]
      },
      length(s.environment) == 0 ? {} : {
        environment = [for k in sort(keys(s.environment)) : { name = k, value = s.environment[k] }]
      },
      length(s.secrets) == 0 ? {} : {
        secrets = [for k in sort(keys(s.secrets)) : { name = k, valueFrom = s.secrets[k] }]
      },
      length(s.mount_points) == 0 ? {} : {
        mountPoints = [for m in s.mount_points : { sourceVolume = m.volume, containerPath = m.container_path, readOnly = m.read_only }]
      },
      s.command == null ? {} : { command = s.command },
      s.wait_for_main ? { dependsOn = [{ containerName = var.container_name, condition = "HEALTHY" }] } : {},
      s.health_check == null ? {} : {
        healthCheck = {
          command     = s.health_check.command
          interval    = s.health_check.interval
          timeout     = s.health_check.timeout
          retries     = s.health_check.retries
          startPeriod = s.health_check.start_period
        }
      },
    )
  ]

  log_group_arns = concat(
    [aws_cloudwatch_log_group.main.arn],
    [for g in aws_cloudwatch_log_group.sidecar : g.arn],
  )

  task_policy_needed = var.efs_volume != null || var.enable_execute_command || var.task_role_policy_json != null
}

################################################################################
# Logs

resource "aws_cloudwatch_log_group" "main" {
  name              = var.log_group_name
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "sidecar" {
  for_each = local.sidecars

  name              = each.value.log_group_name
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

################################################################################
# IAM: execution role (pull the image, write logs, read exactly the secrets
# named in the task definition) and task role (what the process may call).

data "aws_iam_policy_document" "assume_execution" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The task role trusts ECS tasks of this account only (confused deputy).
data "aws_iam_policy_document" "assume_task" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = substr("${var.name}-execution", 0, 64)
  description        = "ECS task execution role of ${var.name}: image pull, logs, its secrets"
  assume_role_policy = data.aws_iam_policy_document.assume_execution.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for arn in local.log_group_arns : "${arn}:*"]
  }

  dynamic "statement" {
    for_each = length(local.secret_refs) > 0 ? [1] : []

    content {
      sid       = "TaskSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "TaskSecretsKms"
      actions   = ["kms:Decrypt"]
      resources = var.secrets_kms_key_arns
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name               = substr("${var.name}-task", 0, 64)
  description        = "ECS task role of ${var.name} (p2pmesh --role=${var.role})"
  assume_role_policy = data.aws_iam_policy_document.assume_task.json
  tags               = var.tags
}

data "aws_iam_policy_document" "task" {
  count = local.task_policy_needed ? 1 : 0

  source_policy_documents = var.task_role_policy_json == null ? [] : [var.task_role_policy_json]

  dynamic "statement" {
    for_each = var.efs_volume == null ? [] : [var.efs_volume]

    content {
      sid       = "EfsMount"
      actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
      resources = [statement.value.file_system_arn]

      condition {
        test     = "StringEquals"
        variable = "elasticfilesystem:AccessPointArn"
        values   = [statement.value.access_point_arn]
      }
    }
  }

  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []

    content {
      sid = "EcsExec"
      actions = [
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
      ]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  count = local.task_policy_needed ? 1 : 0

  name   = "task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task[0].json
}

################################################################################
# Network

resource "aws_security_group" "this" {
  name_prefix = "${substr(var.name, 0, 60)}-"
  description = "Tasks of ${var.name} (p2pmesh ${var.role})"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "this" {
  for_each = var.ingress_rules

  security_group_id            = aws_security_group.this.id
  description                  = each.value.description
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = coalesce(each.value.to_port, each.value.port)
  referenced_security_group_id = each.value.self ? aws_security_group.this.id : each.value.source_security_group_id
  cidr_ipv4                    = each.value.cidr_ipv4
  tags                         = var.tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.this.id
  description       = "Outbound: ECR, Secrets Manager, Logs, Redis, PostgreSQL, tunnel targets"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = var.tags
}

################################################################################
# Task definition

resource "aws_ecs_task_definition" "this" {
  family                   = local.family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(concat([local.main_container], local.sidecar_containers))

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  dynamic "volume" {
    for_each = var.efs_volume == null ? [] : [var.efs_volume]

    content {
      name = "efs"

      efs_volume_configuration {
        file_system_id     = volume.value.file_system_id
        transit_encryption = "ENABLED"

        authorization_config {
          access_point_id = volume.value.access_point_id
          iam             = "ENABLED"
        }
      }
    }
  }

  dynamic "volume" {
    for_each = toset(var.ephemeral_volumes)

    content {
      name = volume.value
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = length(setintersection(keys(var.environment), keys(var.secrets))) == 0
      error_message = "A variable is both in environment and in secrets; a secret must only come from Secrets Manager."
    }
  }
}

################################################################################
# Service. Two variants of one resource: Terraform owns desired_count, or it
# only sets the initial count (autoscaling, start/stop on demand).

resource "aws_ecs_service" "this" {
  count = local.ignore_desired_count ? 0 : 1

  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  platform_version                   = var.platform_version
  enable_execute_command             = var.enable_execute_command
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state
  health_check_grace_period_seconds  = length(var.load_balancers) > 0 ? var.health_check_grace_period_seconds : null
  deployment_minimum_healthy_percent = var.deployment_minimum_healthy_percent
  deployment_maximum_percent         = var.deployment_maximum_percent

  deployment_circuit_breaker {
    enable   = var.deployment_circuit_breaker.enable
    rollback = var.deployment_circuit_breaker.rollback
  }

  capacity_provider_strategy {
    capacity_provider = var.capacity_provider
    weight            = 100
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat([aws_security_group.this.id], var.additional_security_group_ids)
    assign_public_ip = var.assign_public_ip
  }

  dynamic "load_balancer" {
    for_each = var.load_balancers

    content {
      target_group_arn = load_balancer.value.target_group_arn
      container_name   = coalesce(load_balancer.value.container_name, var.container_name)
      container_port   = load_balancer.value.container_port
    }
  }

  tags = var.tags
}

resource "aws_ecs_service" "ignore_desired_count" {
  count = local.ignore_desired_count ? 1 : 0

  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  platform_version                   = var.platform_version
  enable_execute_command             = var.enable_execute_command
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state
  health_check_grace_period_seconds  = length(var.load_balancers) > 0 ? var.health_check_grace_period_seconds : null
  deployment_minimum_healthy_percent = var.deployment_minimum_healthy_percent
  deployment_maximum_percent         = var.deployment_maximum_percent

  deployment_circuit_breaker {
    enable   = var.deployment_circuit_breaker.enable
    rollback = var.deployment_circuit_breaker.rollback
  }

  capacity_provider_strategy {
    capacity_provider = var.capacity_provider
    weight            = 100
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat([aws_security_group.this.id], var.additional_security_group_ids)
    assign_public_ip = var.assign_public_ip
  }

  dynamic "load_balancer" {
    for_each = var.load_balancers

    content {
      target_group_arn = load_balancer.value.target_group_arn
      container_name   = coalesce(load_balancer.value.container_name, var.container_name)
      container_port   = load_balancer.value.container_port
    }
  }

  tags = var.tags

  lifecycle {
    ignore_changes = [desired_count]
  }
}

locals {
  service_name = one(concat(aws_ecs_service.this[*].name, aws_ecs_service.ignore_desired_count[*].name))
  service_id   = one(concat(aws_ecs_service.this[*].id, aws_ecs_service.ignore_desired_count[*].id))
}

################################################################################
# Autoscaling

resource "aws_appautoscaling_target" "this" {
  count = var.autoscaling == null ? 0 : 1

  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${var.cluster_name}/${local.service_name}"
  min_capacity       = var.autoscaling.min_capacity
  max_capacity       = var.autoscaling.max_capacity
}

resource "aws_appautoscaling_policy" "cpu" {
  count = var.autoscaling == null ? 0 : 1

  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.this[0].resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.autoscaling.cpu_target
    scale_in_cooldown  = var.autoscaling.scale_in_cooldown
    scale_out_cooldown = var.autoscaling.scale_out_cooldown

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "memory" {
  count = try(var.autoscaling.memory_target, null) == null ? 0 : 1

  name               = "${var.name}-memory"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.this[0].resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.autoscaling.memory_target
    scale_in_cooldown  = var.autoscaling.scale_in_cooldown
    scale_out_cooldown = var.autoscaling.scale_out_cooldown

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageMemoryUtilization"
    }
  }
}
