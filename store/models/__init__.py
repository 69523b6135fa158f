"""Every table of the store; importing this package registers them all on ``Base``."""

from store.base import Base
from store.models.activity import Activity, ActivityKind, ActivityLink, ActivityStatus
from store.models.admin import ApiToken, RecordScope, Role, Team, User
from store.models.comms import (
    Attachment,
    Blob,
    Call,
    CallBack,
    CallDisposition,
    CallSegment,
    Direction,
    Email,
    EmailKind,
    EmailLocation,
    EmailParticipant,
    EmailThread,
    InboundJournal,
    JournalState,
)
from store.models.crm import (
    Account,
    AccountContact,
    Campaign,
    CampaignStatus,
    Contact,
    Lead,
    LeadStatus,
    Opportunity,
    PipelineStage,
    StageHistory,
)
from store.models.identity import EmailIdentity, PhoneIdentity
from store.models.mail import ImapAction, ImapCursor, MailRule
from store.models.meta import AuditEntry, Document, Tag, Tagging
from store.models.tracking import (
    MailOptOut,
    MailTemplate,
    OutboxEntry,
    SentRecipient,
    TrackedLink,
    TrackingHit,
)

# The CRM records that activities, identities, tags and audit entries point at.
RECORD_TYPES: dict[str, type[Base]] = {
    "lead": Lead,
    "contact": Contact,
    "account": Account,
    "opportunity": Opportunity,
    "campaign": Campaign,
    "user": User,
    "activity": Activity,
}

__all__ = [
    "RECORD_TYPES",
    "Account",
    "AccountContact",
    "Activity",
    "ActivityKind",
    "ActivityLink",
    "ActivityStatus",
    "ApiToken",
    "Attachment",
    "AuditEntry",
    "Base",
    "Blob",
    "Call",
    "CallBack",
    "CallDisposition",
    "CallSegment",
    "Campaign",
    "CampaignStatus",
    "Contact",
    "Direction",
    "Document",
    "Email",
    "EmailIdentity",
    "EmailKind",
    "EmailLocation",
    "EmailParticipant",
    "EmailThread",
    "ImapAction",
    "ImapCursor",
    "InboundJournal",
    "JournalState",
    "Lead",
    "LeadStatus",
    "MailOptOut",
    "MailRule",
    "MailTemplate",
    "Opportunity",
    "OutboxEntry",
    "PhoneIdentity",
    "PipelineStage",
    "RecordScope",
    "Role",
    "SentRecipient",
    "StageHistory",
    "Tag",
    "Tagging",
    "Team",
    "TrackedLink",
    "TrackingHit",
    "User",
]
