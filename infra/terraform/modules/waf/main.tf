# waf: a regional AWS WAF web ACL in front of the ALB. Owns the web ACL
# (default allow; a rate-based rule that blocks a client IP over rate_limit
# requests per 5 minutes, 500 by default as in the signaling seed; optional AWS
# managed rule groups) and its associations.

resource "aws_wafv2_web_acl" "this" {
  name        = var.name
  description = "p2pmesh: rate limit per client IP"
  scope       = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "rate-limit-per-ip"
    priority = 1

    action {
      dynamic "block" {
        for_each = var.rate_limit_action == "block" ? [1] : []
        content {}
      }

      dynamic "count" {
        for_each = var.rate_limit_action == "count" ? [1] : []
        content {}
      }
    }

    statement {
      rate_based_statement {
        limit              = var.rate_limit
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-rate-limit"
      sampled_requests_enabled   = true
    }
  }

  dynamic "rule" {
    for_each = { for i, g in var.managed_rule_groups : g => i }

    content {
      name     = rule.key
      priority = 10 + rule.value

      override_action {
        none {}
      }

      statement {
        managed_rule_group_statement {
          name        = rule.key
          vendor_name = "AWS"
        }
      }

      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = "${var.name}-${rule.key}"
        sampled_requests_enabled   = true
      }
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = var.name
    sampled_requests_enabled   = true
  }

  tags = var.tags
}

resource "aws_wafv2_web_acl_association" "this" {
  for_each = var.resource_arns

  resource_arn = each.value
  web_acl_arn  = aws_wafv2_web_acl.this.arn
}
