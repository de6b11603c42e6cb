output "file_system_id" {
  description = "ID of the file system (known once its mount targets exist, so that tasks can mount it)."
  value       = aws_efs_file_system.this.id

  depends_on = [aws_efs_mount_target.this]
}

output "file_system_arn" {
  description = "ARN of the file system (elasticfilesystem:Client* resource)."
  value       = aws_efs_file_system.this.arn
}

output "access_point_id" {
  description = "ID of the access point to mount."
  value       = aws_efs_access_point.this.id

  depends_on = [aws_efs_mount_target.this, aws_efs_file_system_policy.this]
}

output "access_point_arn" {
  description = "ARN of the access point (the IAM condition elasticfilesystem:AccessPointArn)."
  value       = aws_efs_access_point.this.arn
}

output "security_group_id" {
  description = "Security group of the mount targets."
  value       = aws_security_group.this.id
}

output "mount_target_ids" {
  description = "Mount target ids by subnet id (ECS mounts need one in the task's Availability Zone)."
  value       = { for k, m in aws_efs_mount_target.this : k => m.id }
}
