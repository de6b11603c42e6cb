output "service_name" {
  description = "Name of the ECS service."
  value       = local.service_name
}

output "service_id" {
  description = "ARN of the ECS service."
  value       = local.service_id
}

output "cluster_name" {
  description = "Cluster the service runs in."
  value       = var.cluster_name
}

output "task_definition_arn" {
  description = "ARN (with revision) of the task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "task_definition_family" {
  description = "Family of the task definition."
  value       = aws_ecs_task_definition.this.family
}

output "container_name" {
  description = "Name of the p2pmesh container."
  value       = var.container_name
}

output "security_group_id" {
  description = "Security group of the tasks (allow it in Redis, RDS and EFS)."
  value       = aws_security_group.this.id
}

output "execution_role_arn" {
  description = "ARN of the task execution role."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "ARN of the task role."
  value       = aws_iam_role.task.arn
}

output "task_role_name" {
  description = "Name of the task role (attach more policies to it)."
  value       = aws_iam_role.task.name
}

output "log_group_names" {
  description = "Log group of each container, by container name."
  value = merge(
    { (var.container_name) = aws_cloudwatch_log_group.main.name },
    { for k, g in aws_cloudwatch_log_group.sidecar : k => g.name },
  )
}

output "secret_arns" {
  description = "Secrets Manager secrets the execution role may read."
  value       = local.secret_arns
}
