# rds: PostgreSQL for the game role's raft discovery (the servers table) and,
# optionally, the chat role. Owns the DB instance (gp3, encrypted, private),
# its subnet group, a parameter group with rds.force_ssl = 1, the security
# group (5432 from the allowed services only) and a Secrets Manager secret
# with the whole postgres:// URL (DATABASE_URL), since the URL carries the
# password.

resource "aws_security_group" "this" {
  name_prefix = "${var.identifier}-db-"
  description = "RDS ${var.identifier}: PostgreSQL from the p2pmesh services only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.identifier}-db" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each = var.allowed_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
  tags                         = var.tags
}

resource "aws_db_subnet_group" "this" {
  name        = "${var.identifier}-db"
  description = "Subnets of ${var.identifier}"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.identifier}-"
  family      = var.parameter_group_family
  description = "p2pmesh: TLS required"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "this" {
  identifier     = var.identifier
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  allocated_storage     = var.allocated_storage
  max_allocated_storage = var.max_allocated_storage
  storage_type          = var.storage_type
  storage_encrypted     = true

  db_name  = var.db_name
  username = var.username
  password = var.password
  port     = 5432

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.multi_az

  backup_retention_period   = var.backup_retention_period
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.skip_final_snapshot
  final_snapshot_identifier = var.skip_final_snapshot ? null : "${var.identifier}-final"

  auto_minor_version_upgrade   = true
  performance_insights_enabled = var.performance_insights_enabled
  apply_immediately            = var.apply_immediately

  tags = var.tags
}

resource "aws_secretsmanager_secret" "url" {
  name                    = coalesce(var.url_secret_name, "${var.identifier}/database-url")
  description             = "postgres:// URL (with the password) of RDS ${var.identifier}, for DATABASE_URL"
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id     = aws_secretsmanager_secret.url.id
  secret_string = "postgres://${var.username}:${var.password}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${var.db_name}?sslmode=${var.sslmode}"
}
