ALTER TABLE `agents` ADD `health` text;--> statement-breakpoint
ALTER TABLE `agents` ADD `health_reason` text;--> statement-breakpoint
ALTER TABLE `agents` ADD `health_config` text;--> statement-breakpoint
ALTER TABLE `agents` ADD `health_at` integer;--> statement-breakpoint
ALTER TABLE `agents` ADD `recorded_presence` text;