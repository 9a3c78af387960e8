"""What users ask of invoices. Time arrives inside the command: deciding never reads a clock."""

from __future__ import annotations

import datetime as dt

import msgspec


class CreateInvoice(msgspec.Struct, frozen=True):
    invoice_id: str
    customer_id: str
    currency: str
    due_date: dt.date


class AddInvoiceLine(msgspec.Struct, frozen=True):
    invoice_id: str
    sku: str
    amount: int
    currency: str


class IssueInvoice(msgspec.Struct, frozen=True):
    invoice_id: str
    now: dt.datetime


class PayInvoice(msgspec.Struct, frozen=True):
    invoice_id: str
    amount: int
    now: dt.datetime


class CancelInvoice(msgspec.Struct, frozen=True):
    invoice_id: str
    reason: str
    now: dt.datetime


class SendPaymentReminder(msgspec.Struct, frozen=True):
    invoice_id: str
    now: dt.datetime


class MarkInvoiceOverdue(msgspec.Struct, frozen=True):
    invoice_id: str
    now: dt.datetime
