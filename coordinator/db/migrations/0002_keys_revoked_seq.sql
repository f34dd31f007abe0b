ALTER TABLE `keys` ADD `revoked_seq` integer;
--> statement-breakpoint
-- Back-fill (hand-written): a key revoked before this column existed gets the seq of the last
-- key.revoke event naming it, which is what replaying the log through the reducer sets, so the
-- live state keeps equalling the replayed one (`ferry audit verify`).
UPDATE `keys` SET `revoked_seq` = (
	SELECT max(`seq`) FROM `audit_events` WHERE `action` = 'key.revoke' AND `subject` = `keys`.`id`
) WHERE `revoked` = 1;
