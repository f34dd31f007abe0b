CREATE TABLE `alert_deliveries` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`alert_id` text NOT NULL,
	`delivery_key` text NOT NULL,
	`body` text NOT NULL,
	`attempts` integer NOT NULL,
	`created_at` integer NOT NULL,
	`next_attempt_at` integer NOT NULL,
	`last_error` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `alert_deliveries_key` ON `alert_deliveries` (`delivery_key`);--> statement-breakpoint
CREATE INDEX `alert_deliveries_due` ON `alert_deliveries` (`next_attempt_at`);--> statement-breakpoint
CREATE INDEX `alert_deliveries_alert` ON `alert_deliveries` (`alert_id`);--> statement-breakpoint
CREATE TABLE `alert_dispatch` (
	`id` text PRIMARY KEY NOT NULL,
	`seq` integer NOT NULL,
	`note` text
);
--> statement-breakpoint
CREATE TABLE `alert_endpoints` (
	`id` text PRIMARY KEY NOT NULL,
	`url` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `alert_outcomes` (
	`id` text PRIMARY KEY NOT NULL,
	`last_attempt_at` integer,
	`last_outcome` text,
	`last_status` integer,
	`last_error` text,
	`delivered` integer NOT NULL,
	`failed` integer NOT NULL,
	`dropped` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `alerts` (
	`id` text PRIMARY KEY NOT NULL,
	`kinds` text NOT NULL,
	`where` text NOT NULL,
	`target` text NOT NULL,
	`url_digest` text NOT NULL,
	`removed` integer NOT NULL,
	`created_seq` integer NOT NULL,
	`removed_seq` integer
);
