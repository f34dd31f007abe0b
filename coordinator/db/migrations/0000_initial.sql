CREATE TABLE `agent_facts` (
	`id` text PRIMARY KEY NOT NULL,
	`agent_id` text NOT NULL,
	`revision` integer NOT NULL,
	`facts` text NOT NULL,
	`hlc` text NOT NULL,
	`seq` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `agent_facts_agent` ON `agent_facts` (`agent_id`);--> statement-breakpoint
CREATE TABLE `agent_presence` (
	`id` text PRIMARY KEY NOT NULL,
	`last_seen` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `agents` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`type` text NOT NULL,
	`status` text NOT NULL,
	`labels` text NOT NULL,
	`token_id` text NOT NULL,
	`facts_revision` integer NOT NULL,
	`system` text,
	`desired_graph` text,
	`pinned_config` text,
	`current_config` text,
	`phase` text,
	`last_error` text,
	`enrolled_seq` integer NOT NULL,
	`updated_seq` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `audit_checkpoints` (
	`seq` integer PRIMARY KEY NOT NULL,
	`hash` text NOT NULL,
	`signature` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `audit_events` (
	`seq` integer PRIMARY KEY NOT NULL,
	`hlc` text NOT NULL,
	`wall_time` integer NOT NULL,
	`actor_key` text NOT NULL,
	`actor_role` text NOT NULL,
	`action` text NOT NULL,
	`subject` text NOT NULL,
	`payload` text NOT NULL,
	`request_signature` text,
	`prev_hash` text NOT NULL,
	`hash` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `audit_events_action` ON `audit_events` (`action`);--> statement-breakpoint
CREATE INDEX `audit_events_subject` ON `audit_events` (`subject`);--> statement-breakpoint
CREATE TABLE `configs` (
	`id` text PRIMARY KEY NOT NULL,
	`graph` text NOT NULL,
	`parents` text NOT NULL,
	`body` text NOT NULL,
	`forced` integer NOT NULL,
	`seq` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `configs_graph` ON `configs` (`graph`);--> statement-breakpoint
CREATE TABLE `graphs` (
	`id` text PRIMARY KEY NOT NULL,
	`head` text NOT NULL,
	`updated_seq` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `keys` (
	`id` text PRIMARY KEY NOT NULL,
	`role` text NOT NULL,
	`label` text NOT NULL,
	`revoked` integer NOT NULL,
	`added_seq` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `nonces` (
	`id` text PRIMARY KEY NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`secret_hash` text NOT NULL,
	`label` text NOT NULL,
	`expires_at` integer NOT NULL,
	`uses_left` integer NOT NULL,
	`auto_approve` integer NOT NULL,
	`labels` text NOT NULL,
	`revoked` integer NOT NULL,
	`created_seq` integer NOT NULL
);
