output "arn" {
  description = "ARN of the load balancer."
  value       = aws_lb.this.arn
}

output "arn_suffix" {
  description = "ARN suffix of the load balancer (CloudWatch LoadBalancer dimension)."
  value       = aws_lb.this.arn_suffix
}

output "dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.this.dns_name
}

output "zone_id" {
  description = "Hosted zone of the load balancer (Route 53 alias records)."
  value       = aws_lb.this.zone_id
}

output "url" {
  description = "Base URL of the load balancer's own DNS name (https:// with a certificate, else http://)."
  value       = "${local.https ? "https" : "http"}://${aws_lb.this.dns_name}"
}

output "security_group_id" {
  description = "Security group of the load balancer (allow it into the targets)."
  value       = aws_security_group.this.id
}

output "listener_arn" {
  description = "Listener that carries the routing rules (HTTPS 443, or HTTP 80 without a certificate)."
  value       = local.listener_arn
}

output "target_group_arns" {
  description = "Target group ARN by target key."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn }
}

output "target_group_arn_suffixes" {
  description = "Target group ARN suffix by target key (CloudWatch TargetGroup dimension)."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn_suffix }
}
