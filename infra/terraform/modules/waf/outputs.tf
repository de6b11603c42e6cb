output "web_acl_arn" {
  description = "ARN of the web ACL."
  value       = aws_wafv2_web_acl.this.arn
}

output "web_acl_id" {
  description = "ID of the web ACL."
  value       = aws_wafv2_web_acl.this.id
}

output "rate_limit" {
  description = "Requests per client IP per 5 minutes before the rate rule acts."
  value       = var.rate_limit
}
