CREATE TABLE `params` (
	`id` text PRIMARY KEY NOT NULL,
	`layer` text NOT NULL,
	`values` text NOT NULL,
	`created_seq` integer NOT NULL,
	`updated_seq` integer NOT NULL
);
