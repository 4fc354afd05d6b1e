-- 001 — The event catalogue.
--
-- The 17 event types of the public webhook documentation, plus webhook.test (sent by `herald test`).
-- Configs and events are validated against this table, so a typo in a producer's INSERT or in a config's
-- `events` list fails loudly instead of silently matching nothing.

CREATE TABLE webhook_event_types (
    name        text PRIMARY KEY,
    category    text NOT NULL,
    description text NOT NULL
);

COMMENT ON TABLE webhook_event_types IS
    'Catalogue of event types Herald accepts: the 17 documented types plus webhook.test.';

INSERT INTO webhook_event_types (name, category, description) VALUES
    ('contact.created',             'contact',      'Fired when a new contact is created'),
    ('contact.updated',             'contact',      'Fired when a contact is updated'),
    ('contact.assigned',            'contact',      'Fired when a contact is assigned to someone'),
    ('deal.created',                'deal',         'Fired when a new deal/lead is created'),
    ('deal.updated',                'deal',         'Fired when a deal is updated'),
    ('deal.stage.changed',          'deal',         'Fired when a deal moves to a different pipeline stage'),
    ('deal.assigned',               'deal',         'Fired when a deal is assigned to someone'),
    ('conversation.created',        'conversation', 'Fired when a new conversation is created'),
    ('conversation.assigned',       'conversation', 'Fired when a conversation is assigned'),
    ('conversation.status.changed', 'conversation', 'Fired when conversation status changes (OPEN/CLOSED)'),
    ('message.received',            'message',      'Fired when a new message is received'),
    ('message.sent',                'message',      'Fired when a message is sent'),
    ('message.delivered',           'message',      'Fired when a sent message is delivered to the recipient'),
    ('message.read',                'message',      'Fired when a sent message is read by the recipient'),
    ('message.failed',              'message',      'Fired when a message fails to send'),
    ('broadcast.response',          'broadcast',    'Fired when a contact replies to a broadcast/campaign message'),
    ('zoom.recording.completed',    'meeting',      'Fired when a Zoom cloud recording finishes processing'),
    ('webhook.test',                'system',       'Sent by `herald test` to check that an endpoint accepts deliveries');
