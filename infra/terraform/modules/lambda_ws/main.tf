# lambda_ws: the lambda role of p2pmesh behind API Gateway WebSocket. Owns the
# WebSocket API ($connect, $disconnect and $default routes, one AWS_PROXY
# integration, a throttled stage with access logs), the Lambda function
# (provided.al2023, the bootstrap zip of infra/lambda/package.sh), the
# DynamoDB connection table with the realm-index GSI and TTL, the log groups,
# and least-privilege IAM (DynamoDB item calls on the table and its index,
# execute-api:ManageConnections on this stage, logs on its own group).

data "aws_region" "current" {}

data "aws_partition" "current" {}

locals {
  api_name   = coalesce(var.api_name, var.name)
  table_name = coalesce(var.table_name, "${var.name}-connections")

  environment = merge(var.environment, {
    CONNECTIONS_TABLE      = aws_dynamodb_table.connections.name
    P2PMESH_LAMBDA_HANDLER = var.app_handler
    P2PMESH_LOG_LEVEL      = var.log_level
    P2PMESH_METRICS_EMF    = tostring(var.emf_metrics)
  })

  routes = toset(["$connect", "$disconnect", "$default"])
}

################################################################################
# Connection store

resource "aws_dynamodb_table" "connections" {
  name         = local.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "connectionId"

  attribute {
    name = "connectionId"
    type = "S"
  }

  attribute {
    name = "realm"
    type = "S"
  }

  attribute {
    name = "peerId"
    type = "S"
  }

  # lambda.dynamodb_index: a realm ("r:" + room) is listed with one Query.
  global_secondary_index {
    name            = "realm-index"
    hash_key        = "realm"
    range_key       = "peerId"
    projection_type = "ALL"
  }

  # Entries expire lambda.connection_ttl (660 s) after their last message.
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = var.point_in_time_recovery
  }

  server_side_encryption {
    enabled = true
  }

  tags = var.tags
}

################################################################################
# Logs

resource "aws_cloudwatch_log_group" "function" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "access" {
  name              = "/aws/apigateway/${local.api_name}/${var.stage_name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

################################################################################
# IAM

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.name}-lambda"
  description        = "p2pmesh --role=lambda behind ${local.api_name}"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }

  statement {
    sid = "ConnectionTable"
    actions = [
      "dynamodb:DeleteItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [
      aws_dynamodb_table.connections.arn,
      "${aws_dynamodb_table.connections.arn}/index/*",
    ]
  }

  # POST (send) and DELETE (close) on @connections of this stage only.
  statement {
    sid       = "ManageConnections"
    actions   = ["execute-api:ManageConnections"]
    resources = ["${aws_apigatewayv2_api.this.execution_arn}/${var.stage_name}/*/@connections/*"]
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "p2pmesh-lambda"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}

################################################################################
# Function

resource "aws_lambda_function" "this" {
  function_name                  = var.name
  description                    = "p2pmesh --role=lambda (${var.app_handler}) for ${local.api_name}"
  role                           = aws_iam_role.function.arn
  runtime                        = var.runtime
  handler                        = var.handler
  architectures                  = [var.architecture]
  filename                       = var.zip_path
  source_code_hash               = filebase64sha256(var.zip_path)
  timeout                        = var.timeout
  memory_size                    = var.memory_size
  reserved_concurrent_executions = var.reserved_concurrent_executions

  environment {
    variables = local.environment
  }

  tags = var.tags

  depends_on = [
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.function,
  ]
}

resource "aws_lambda_permission" "apigateway" {
  statement_id  = "AllowApiGatewayWebSocket"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this.execution_arn}/*/*"
}

################################################################################
# API Gateway WebSocket API

resource "aws_apigatewayv2_api" "this" {
  name                       = local.api_name
  description                = "p2pmesh signaling over WebSocket (Lambda ${var.name})"
  protocol_type              = "WEBSOCKET"
  route_selection_expression = var.route_selection_expression
  tags                       = var.tags
}

resource "aws_apigatewayv2_integration" "lambda" {
  api_id             = aws_apigatewayv2_api.this.id
  integration_type   = "AWS_PROXY"
  integration_method = "POST"
  integration_uri    = aws_lambda_function.this.invoke_arn
}

resource "aws_apigatewayv2_route" "this" {
  for_each = local.routes

  api_id    = aws_apigatewayv2_api.this.id
  route_key = each.value
  target    = "integrations/${aws_apigatewayv2_integration.lambda.id}"
}

resource "aws_apigatewayv2_stage" "this" {
  api_id      = aws_apigatewayv2_api.this.id
  name        = var.stage_name
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit   = var.throttling_burst_limit
    throttling_rate_limit    = var.throttling_rate_limit
    logging_level            = var.execution_logging_level
    data_trace_enabled       = false
    detailed_metrics_enabled = false
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access.arn
    format = jsonencode({
      requestId     = "$context.requestId"
      time          = "$context.requestTimeEpoch"
      eventType     = "$context.eventType"
      routeKey      = "$context.routeKey"
      connectionId  = "$context.connectionId"
      status        = "$context.status"
      ip            = "$context.identity.sourceIp"
      error         = "$context.error.message"
      integrationId = "$context.integration.requestId"
      integration   = "$context.integration.status"
      latency       = "$context.integration.latency"
    })
  }

  tags = var.tags

  depends_on = [
    aws_apigatewayv2_route.this,
    aws_api_gateway_account.this,
  ]
}

################################################################################
# API Gateway's CloudWatch role (a per-region account setting)

data "aws_iam_policy_document" "assume_apigateway" {
  count = var.manage_account_cloudwatch_role ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["apigateway.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "apigateway_cloudwatch" {
  count = var.manage_account_cloudwatch_role ? 1 : 0

  name               = "${var.name}-apigw-logs"
  description        = "API Gateway writes execution and access logs of ${data.aws_region.current.name}"
  assume_role_policy = data.aws_iam_policy_document.assume_apigateway[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "apigateway_cloudwatch" {
  count = var.manage_account_cloudwatch_role ? 1 : 0

  role       = aws_iam_role.apigateway_cloudwatch[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
}

resource "aws_api_gateway_account" "this" {
  count = var.manage_account_cloudwatch_role ? 1 : 0

  cloudwatch_role_arn = aws_iam_role.apigateway_cloudwatch[0].arn

  depends_on = [aws_iam_role_policy_attachment.apigateway_cloudwatch]
}
