# nlb: the Network Load Balancer of the TCP roles. Owns the NLB and its
# security group, one TCP listener and ip target group per entry of listeners
# (the tunnel's mTLS port 8443 health-checked over HTTP on its admin port 8080,
# RTMP 1935 to the chat task's nginx-rtmp sidecar).

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  ingress = merge([
    for k, l in var.listeners : {
      for cidr in l.allowed_cidrs : "${k}-${cidr}" => { port = l.port, cidr = cidr, listener = k }
    }
  ]...)

  # Ports the NLB sends traffic and health checks to.
  egress_ports = toset(flatten([
    for l in values(var.listeners) : concat(
      [tostring(coalesce(l.target_port, l.port))],
      l.health_check_port == "traffic-port" ? [] : [l.health_check_port],
    )
  ]))

  # Targets may sit in any of the VPC's CIDR blocks.
  vpc_cidrs = [for a in data.aws_vpc.this.cidr_block_associations : a.cidr_block]
  egress = {
    for pair in setproduct(local.egress_ports, local.vpc_cidrs) :
    "${pair[0]}-${pair[1]}" => { port = tonumber(pair[0]), cidr = pair[1] }
  }
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-nlb-"
  description = "NLB ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "listener" {
  for_each = local.ingress

  security_group_id = aws_security_group.this.id
  description       = "Clients to ${each.value.listener} (${each.value.port})"
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
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = var.internal
  security_groups                  = [aws_security_group.this.id]
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = var.cross_zone
  enable_deletion_protection       = var.deletion_protection
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  for_each = var.listeners

  name                   = trimsuffix(substr("${var.name}-${each.key}", 0, 32), "-")
  port                   = coalesce(each.value.target_port, each.value.port)
  protocol               = "TCP"
  target_type            = "ip"
  vpc_id                 = var.vpc_id
  deregistration_delay   = each.value.deregistration_delay
  connection_termination = each.value.connection_termination
  preserve_client_ip     = each.value.preserve_client_ip

  health_check {
    enabled             = true
    protocol            = each.value.health_check_protocol
    port                = each.value.health_check_port
    path                = each.value.health_check_protocol == "TCP" ? null : each.value.health_check_path
    matcher             = each.value.health_check_protocol == "TCP" ? null : each.value.health_check_matcher
    interval            = each.value.health_check_interval
    healthy_threshold   = each.value.healthy_threshold
    unhealthy_threshold = each.value.unhealthy_threshold
  }

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}

resource "aws_lb_listener" "this" {
  for_each = var.listeners

  load_balancer_arn = aws_lb.this.arn
  port              = each.value.port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}
