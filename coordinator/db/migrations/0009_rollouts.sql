CREATE TABLE `rollout_releases` (
	`id` text PRIMARY KEY NOT NULL,
	`graph` text NOT NULL,
	`config_id` text NOT NULL,
	`agent_id` text NOT NULL,
	`batch` integer NOT NULL,
	`outcome` text NOT NULL,
	`seq` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `rollout_releases_config` ON `rollout_releases` (`config_id`);--> statement-breakpoint
CREATE TABLE `rollouts` (
	`id` text PRIMARY KEY NOT NULL,
	`policy` text,
	`config_id` text,
	`base` text,
	`status` text,
	`batch` integer NOT NULL,
	`target` integer NOT NULL,
	`released` integer NOT NULL,
	`active` integer NOT NULL,
	`failed` integer NOT NULL,
	`accepted_failures` integer NOT NULL,
	`settled_at` integer,
	`reason` text,
	`started_seq` integer,
	`updated_seq` integer NOT NULL
);
