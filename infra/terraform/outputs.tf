output "alb_dns_name" {
  description = "DNS name of the ALB (signaling, chat, game): point the role host names at it (CNAME or alias)."
  value       = one(module.alb[*].dns_name)
}

output "alb_url" {
  description = "Base URL of the ALB's own name (https:// with certificate_arn, else http://)."
  value       = one(module.alb[*].url)
}

output "nlb_dns_name" {
  description = "DNS name of the NLB (tunnel 8443, RTMP 1935)."
  value       = one(module.nlb[*].dns_name)
}

output "tunnel_endpoint" {
  description = "host:port agents dial (tunnel.server_ip / --server-ip and tunnel.server_port); the server certificate is checked against tunnel.server_name, not this name."
  value       = try(module.nlb[0].endpoints["tunnel"], null)
}

output "rtmp_url" {
  description = "RTMP URL streamers publish to (rtmp://.../live/STREAM_KEY)."
  value       = local.rtmp_enabled ? "rtmp://${module.nlb[0].dns_name}:1935/live" : null
}

output "websocket_url" {
  description = "WebSocket URL of the lambda role: wss://<api-id>.execute-api.<region>.amazonaws.com/<stage>."
  value       = one(module.lambda[*].websocket_url)
}

output "connections_table" {
  description = "DynamoDB connection table of the lambda role (CONNECTIONS_TABLE)."
  value       = one(module.lambda[*].table_name)
}

output "ecs_clusters" {
  description = "ECS cluster name of each enabled role."
  value       = { for role, on in local.enabled : role => local.cluster_of[role] if on }
}

output "ecs_services" {
  description = "ECS service name of each enabled role (aws ecs update-service --cluster C --service S --desired-count N)."
  value = merge(
    var.signaling_enabled ? { signaling = module.signaling[0].service_name } : {},
    var.chat_enabled ? { chat = module.chat[0].service_name } : {},
    var.tunnel_enabled ? { tunnel = module.tunnel[0].service_name } : {},
    var.game_enabled ? { game = module.game[0].service_name } : {},
  )
}

output "log_group_names" {
  description = "CloudWatch log groups by role (and container or source)."
  value = merge(
    var.signaling_enabled ? { signaling = module.signaling[0].log_group_names } : {},
    var.chat_enabled ? { chat = module.chat[0].log_group_names } : {},
    var.tunnel_enabled ? { tunnel = module.tunnel[0].log_group_names } : {},
    var.game_enabled ? { game = module.game[0].log_group_names } : {},
    var.lambda_enabled ? { lambda = module.lambda[0].log_group_names } : {},
  )
}

output "secret_arns" {
  description = "Secrets Manager ARNs (the tasks read all but redis_auth_token, which is for operators); no value appears in task definitions or outputs."
  value = {
    jwt_secret       = local.jwt_secret_arn
    redis_url        = local.redis_url_secret_arn
    redis_auth_token = local.redis_auth_secret_arn
    database_url     = local.database_url_secret_arn
    tunnel_cert      = var.tunnel_cert_pem_secret_arn
    tunnel_key       = var.tunnel_key_pem_secret_arn
    tunnel_ca        = var.tunnel_ca_pem_secret_arn
  }
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of ElastiCache (TLS, AUTH; the full URL is in the redis_url secret)."
  value       = one(module.redis[*].primary_endpoint_address)
}

output "database_address" {
  description = "Host name of the RDS PostgreSQL instance (the full URL is in the database_url secret)."
  value       = one(module.rds[*].address)
}

output "efs_file_system_id" {
  description = "EFS file system of chat's SQLite database."
  value       = one(module.efs[*].file_system_id)
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.alarms.sns_topic_arn
}
