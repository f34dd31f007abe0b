ALTER TABLE `agents` ADD `retry_seq` integer;--> statement-breakpoint
ALTER TABLE `agents` ADD `stop_requested` integer DEFAULT false NOT NULL;