"""Shared by the read path's tests: a small register of three purposes and one
compatibility entry (client.contract -> prospection.postal), decided against
identity, contact and contact.email data."""

from __future__ import annotations

from purposelimit._model import Compatibility, DataCategory, Purpose, Retention
from purposelimit._register import Register


def make_register() -> Register:
    """client.contract, prospection.postal (compatible reuse) and newsletter.product (consent)."""
    return Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing contracts",
                "contract",
                Retention("P1Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "prospection.postal",
                "Postal offers",
                "Offers by post",
                "legitimate-interests",
                Retention("P1Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "newsletter.product",
                "Product news",
                "News by e-mail",
                "consent",
                Retention("P1Y"),
                categories=["identity", "contact"],
            ),
        ],
        [DataCategory("identity"), DataCategory("contact"), DataCategory("contact.email")],
        [
            Compatibility(
                "contract-to-postal",
                "client.contract",
                "prospection.postal",
                "compatible",
                link="same customers",
                context="told at checkout",
                nature="name and address",
                consequences="postal mail",
                safeguards=["objection offered"],
            )
        ],
    )
