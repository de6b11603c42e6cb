output "replication_group_id" {
  description = "ID of the replication group."
  value       = aws_elasticache_replication_group.this.id
}

output "primary_endpoint_address" {
  description = "Host name of the primary (TLS, port below)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = var.port
}

output "member_cluster_ids" {
  description = "Cache cluster ids of the nodes (CloudWatch CacheClusterId dimension)."
  value       = local.member_cluster_ids
}

output "security_group_id" {
  description = "Security group of the cache."
  value       = aws_security_group.this.id
}

output "url_secret_arn" {
  description = "ARN of the secret holding the rediss:// URL (pass it as an ECS secret, never as plain environment)."
  value       = aws_secretsmanager_secret_version.url.arn
}
