CREATE TABLE `secret_ciphertexts` (
	`id` text PRIMARY KEY NOT NULL,
	`version` integer NOT NULL,
	`sha256` text NOT NULL,
	`ciphertext` blob NOT NULL
);
--> statement-breakpoint
CREATE TABLE `secrets` (
	`id` text PRIMARY KEY NOT NULL,
	`version` integer NOT NULL,
	`recipients` text NOT NULL,
	`setter` text NOT NULL,
	`selector` text NOT NULL,
	`ciphertext_sha256` text NOT NULL,
	`ciphertext_bytes` integer NOT NULL,
	`removed` integer NOT NULL,
	`updated_seq` integer NOT NULL
);
