# alb: the shared Application Load Balancer of the HTTP/WebSocket roles
# (signaling, chat, game). Owns the ALB and its security group, one ip target
# group per role health-checked on /health, the listeners (HTTPS 443 with HTTP
# 80 redirecting to it when a certificate is given, else HTTP 80), host/path
# routing rules and a fixed 403 for paths that must stay internal.

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  https       = var.certificate_arn != null
  target_keys = sort(keys(var.targets))

  listener_ports = local.https ? [80, 443] : [80]
  ingress = {
    for pair in setproduct(local.listener_ports, var.ingress_cidrs) :
    "${pair[0]}-${pair[1]}" => { port = pair[0], cidr = pair[1] }
  }
  target_ports = toset([for t in values(var.targets) : tostring(t.port)])

  # Targets may sit in any of the VPC's CIDR blocks.
  vpc_cidrs = [for a in data.aws_vpc.this.cidr_block_associations : a.cidr_block]
  egress = {
    for pair in setproduct(local.target_ports, local.vpc_cidrs) :
    "${pair[0]}-${pair[1]}" => { port = tonumber(pair[0]), cidr = pair[1] }
  }

  routed = {
    for k, t in var.targets : k => merge(t, {
      priority = coalesce(t.priority, 100 + 10 * index(local.target_keys, k))
    })
    if length(t.host_headers) + length(t.path_patterns) > 0
  }

  listener_arn = one(concat(aws_lb_listener.https[*].arn, aws_lb_listener.http[*].arn))
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-alb-"
  description = "ALB ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "listener" {
  for_each = local.ingress

  security_group_id = aws_security_group.this.id
  description       = "Clients to listener ${each.value.port}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = var.tags
}

resource "aws_vpc_security_group_egress_rule" "targets" {
  for_each = local.egress

  security_group_id = aws_security_group.this.id
  description       = "To targets and health checks on ${each.value.port}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = var.tags
}

resource "aws_lb" "this" {
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = var.internal
  security_groups            = [aws_security_group.this.id]
  subnets                    = var.subnet_ids
  idle_timeout               = var.idle_timeout
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]

    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }

  tags = var.tags
}

resource "aws_lb_target_group" "this" {
  for_each = var.targets

  name                 = trimsuffix(substr("${var.name}-${each.key}", 0, 32), "-")
  port                 = each.value.port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = each.value.deregistration_delay

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = each.value.health_check_path
    matcher             = each.value.health_check_matcher
    interval            = each.value.health_check_interval
    timeout             = 5
    healthy_threshold   = each.value.healthy_threshold
    unhealthy_threshold = each.value.unhealthy_threshold
  }

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}

################################################################################
# Listeners

resource "aws_lb_listener" "http_redirect" {
  count = local.https ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }

  tags = var.tags
}

resource "aws_lb_listener" "https" {
  count = local.https ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  dynamic "default_action" {
    for_each = var.default_target == null ? [] : [var.default_target]

    content {
      type             = "forward"
      target_group_arn = aws_lb_target_group.this[default_action.value].arn
    }
  }

  dynamic "default_action" {
    for_each = var.default_target == null ? [404] : []

    content {
      type = "fixed-response"

      fixed_response {
        content_type = "text/plain"
        message_body = "not found"
        status_code  = "404"
      }
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.default_target == null || contains(keys(var.targets), coalesce(var.default_target, "-"))
      error_message = "default_target must be one of the keys of targets."
    }
  }
}

resource "aws_lb_listener" "http" {
  count = local.https ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  dynamic "default_action" {
    for_each = var.default_target == null ? [] : [var.default_target]

    content {
      type             = "forward"
      target_group_arn = aws_lb_target_group.this[default_action.value].arn
    }
  }

  dynamic "default_action" {
    for_each = var.default_target == null ? [404] : []

    content {
      type = "fixed-response"

      fixed_response {
        content_type = "text/plain"
        message_body = "not found"
        status_code  = "404"
      }
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.default_target == null || contains(keys(var.targets), coalesce(var.default_target, "-"))
      error_message = "default_target must be one of the keys of targets."
    }
  }
}

resource "aws_lb_listener_certificate" "extra" {
  for_each = local.https ? toset(var.additional_certificate_arns) : toset([])

  listener_arn    = aws_lb_listener.https[0].arn
  certificate_arn = each.value
}

################################################################################
# Rules

resource "aws_lb_listener_rule" "deny" {
  count = length(var.deny_path_patterns) > 0 ? 1 : 0

  listener_arn = local.listener_arn
  priority     = 1

  action {
    type = "fixed-response"

    fixed_response {
      content_type = "text/plain"
      message_body = "forbidden"
      status_code  = "403"
    }
  }

  condition {
    path_pattern {
      values = var.deny_path_patterns
    }
  }

  tags = var.tags
}

resource "aws_lb_listener_rule" "route" {
  for_each = local.routed

  listener_arn = local.listener_arn
  priority     = each.value.priority

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }

  dynamic "condition" {
    for_each = length(each.value.host_headers) > 0 ? [each.value.host_headers] : []

    content {
      host_header {
        values = condition.value
      }
    }
  }

  dynamic "condition" {
    for_each = length(each.value.path_patterns) > 0 ? [each.value.path_patterns] : []

    content {
      path_pattern {
        values = condition.value
      }
    }
  }

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}
