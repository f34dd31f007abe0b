CREATE TABLE `relays` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`token_id` text NOT NULL,
	`url` text NOT NULL,
	`fingerprint` text NOT NULL,
	`where` text NOT NULL,
	`status` text NOT NULL,
	`enrolled_seq` integer NOT NULL,
	`updated_seq` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `tokens` ADD `relay` integer DEFAULT false NOT NULL;