output "sns_topic_arn" {
  description = "ARN of the SNS topic every alarm notifies (subscribe more endpoints to it)."
  value       = aws_sns_topic.alarms.arn
}

output "alarm_names" {
  description = "Names of the alarms, by key (e.g. alb-unhealthy-game, ecs-running-game)."
  value       = { for k, a in aws_cloudwatch_metric_alarm.this : k => a.alarm_name }
}
