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

output "security_group_id" {
  description = "Security group of the load balancer (allow it into the targets, health-check port included)."
  value       = aws_security_group.this.id
}

output "endpoints" {
  description = "host:port of each listener, by listener key."
  value       = { for k, l in var.listeners : k => "${aws_lb.this.dns_name}:${l.port}" }
}

output "target_group_arns" {
  description = "Target group ARN by listener key."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn }
}

output "target_group_arn_suffixes" {
  description = "Target group ARN suffix by listener key (CloudWatch TargetGroup dimension)."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn_suffix }
}
