CREATE TABLE `rules` (
	`id` text PRIMARY KEY NOT NULL,
	`where` text NOT NULL,
	`follow` text NOT NULL,
	`pin` text,
	`position` integer NOT NULL,
	`removed` integer NOT NULL,
	`created_seq` integer NOT NULL,
	`updated_seq` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `agents` ADD `control` text DEFAULT 'rules' NOT NULL;--> statement-breakpoint
ALTER TABLE `agents` ADD `rule` text;--> statement-breakpoint
ALTER TABLE `tokens` ADD `follow` text;--> statement-breakpoint
ALTER TABLE `tokens` ADD `pin` text;--> statement-breakpoint
ALTER TABLE `tokens` ADD `rule` text;--> statement-breakpoint
-- Back-fill (hand-written): an agent an operator assigned or pinned before rules existed is under
-- manual control, which is what replaying the log through the reducer sets (agent.assign and
-- agent.pin set it), so the live state keeps equalling the replayed one (`ferry audit verify`).
UPDATE `agents` SET `control` = 'manual' WHERE `id` IN (
	SELECT `subject` FROM `audit_events` WHERE `action` IN ('agent.assign', 'agent.pin')
);
