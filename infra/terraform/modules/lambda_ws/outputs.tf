output "websocket_url" {
  description = "URL clients connect to: wss://<api-id>.execute-api.<region>.amazonaws.com/<stage>."
  value       = aws_apigatewayv2_stage.this.invoke_url
}

output "management_endpoint" {
  description = "Base URL of the @connections Management API of the stage (what p2pmesh derives from each event)."
  value       = "https://${aws_apigatewayv2_api.this.id}.execute-api.${data.aws_region.current.name}.amazonaws.com/${var.stage_name}"
}

output "api_id" {
  description = "ID of the WebSocket API (CloudWatch ApiId dimension)."
  value       = aws_apigatewayv2_api.this.id
}

output "api_execution_arn" {
  description = "Execution ARN of the API."
  value       = aws_apigatewayv2_api.this.execution_arn
}

output "stage_name" {
  description = "Stage name (CloudWatch Stage dimension)."
  value       = aws_apigatewayv2_stage.this.name
}

output "function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.function.arn
}

output "table_name" {
  description = "DynamoDB connection table (CONNECTIONS_TABLE)."
  value       = aws_dynamodb_table.connections.name
}

output "table_arn" {
  description = "ARN of the connection table."
  value       = aws_dynamodb_table.connections.arn
}

output "log_group_names" {
  description = "Log groups: the function's and the stage's access log."
  value = {
    function = aws_cloudwatch_log_group.function.name
    access   = aws_cloudwatch_log_group.access.name
  }
}
