"""Generalization data: label spellings no table holds, unknown vendors' envelopes, free-text
verdicts, gibberish labels (other.unknown) and explicit "nothing found" answers (other.no_finding)."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.rows import ENVELOPE, FREE_TEXT, GIBBERISH, VARIANT, Candidate
from llama_mapper.domain.rows import NO_FINDING as NO_FINDING_SOURCE
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy

# Detectors no reader knows: their envelopes use their own field names.
UNKNOWN_DETECTORS = (
    "acme-shield",
    "sentinel-dlp",
    "trustlayer",
    "guardpost",
    "vigil-scan",
    "contentguard-pro",
    "shieldwall",
    "privasee",
)
_ENVELOPE_ATTRIBUTES = (
    ("category", ("privacy", "safety", "security", "compliance", "content")),
    ("action", ("block", "redact", "flag", "allow", "review")),
    ("policy", ("default", "strict", "pii-v2", "content-policy", "enterprise")),
    ("entity_group", ("sensitive", "identity", "harm", "secret")),
)

# Abbreviations that vendors use and no table spells out.
_ABBREVIATIONS = {
    "number": ("no", "num", "nbr", "nr"),
    "address": ("addr", "adr"),
    "identifier": ("id", "ident"),
    "identification": ("id",),
    "telephone": ("tel",),
    "phone": ("ph",),
    "password": ("pwd", "pw"),
    "account": ("acct", "acc"),
    "license": ("lic",),
    "licence": ("lic",),
    "private": ("priv",),
    "information": ("info",),
    "medical": ("med",),
    "social": ("soc",),
    "security": ("sec",),
    "credit": ("cr",),
    "harassment": ("harass",),
    "violence": ("viol",),
    "instructions": ("instr",),
    "national": ("natl",),
    "passport": ("pp",),
    "vehicle": ("veh",),
    "connection": ("conn",),
    "string": ("str",),
    "token": ("tok",),
    "access": ("acc",),
    "birth": ("b",),
    "date": ("dt",),
    "email": ("mail",),
    "misinformation": ("misinfo",),
    "intellectual": ("intel",),
    "property": ("prop",),
    "exfiltration": ("exfil",),
    "injection": ("inj",),
}

# Free-text verdicts: one hand-written reason per label, plus generic frames around the
# taxonomy's own description and aliases.
REASONS = {
    "pii.person_name": "the reply names a private individual",
    "pii.email_address": "an email address appears in the output",
    "pii.phone_number": "a mobile number is disclosed",
    "pii.postal_address": "a home street address is included",
    "pii.location": "the text reveals where a person lives",
    "pii.date_of_birth": "a customer's birth date is exposed",
    "pii.age": "the user's exact age is stated",
    "pii.national_id": "a social security number was found",
    "pii.passport_number": "a travel document number is present",
    "pii.drivers_license": "a driving permit number is present",
    "pii.ip_address": "the client's network address is logged in the text",
    "pii.online_identifier": "the user's account handle is disclosed",
    "pii.device_id": "a phone IMEI is included",
    "pii.biometric": "a fingerprint template is shared",
    "pii.vehicle_id": "a car registration plate is visible",
    "pii.other": "personal details of a private person are shared",
    "financial.credit_card": "a payment card number is exposed",
    "financial.bank_account": "a bank routing and account number are included",
    "financial.tax_id": "an employer tax identification number is disclosed",
    "financial.crypto_wallet": "a bitcoin wallet address is shared",
    "financial.other": "confidential financial records are shared",
    "phi.health_identifier": "a patient's medical record number appears",
    "phi.medical_condition": "the message discloses a patient's diagnosis",
    "phi.other": "protected health data is included",
    "credentials.api_key": "a cloud provider access key is leaked",
    "credentials.password": "a plaintext password is included",
    "credentials.private_key": "an RSA private key block is pasted",
    "credentials.access_token": "a bearer token is exposed in the header",
    "credentials.connection_string": "a database URL with embedded credentials is present",
    "credentials.other": "an unidentified secret value is exposed",
    "toxicity.general": "the message is rude and abusive",
    "toxicity.insult": "the user is called stupid and worthless",
    "toxicity.profanity": "the text is full of obscene swear words",
    "toxicity.harassment": "repeated bullying directed at a classmate",
    "toxicity.threat": "the writer threatens to hurt the recipient",
    "hate.race_ethnicity": "racial slur targeting an ethnic group",
    "hate.religion": "demeaning remarks about a religious community",
    "hate.gender": "misogynistic attack on women",
    "hate.sexual_orientation": "slurs against gay and lesbian people",
    "hate.disability": "mocking people with disabilities",
    "hate.other": "dehumanizing language about a protected group",
    "violence.general": "describes a violent fight",
    "violence.graphic": "graphic description of gore and injuries",
    "violence.extremism": "praise for a terrorist organization",
    "violence.weapons": "instructions for building an explosive device",
    "sexual.adult": "explicit sexual content between adults",
    "sexual.minors": "sexualized content involving a child",
    "self_harm.general": "discussion of suicide",
    "self_harm.intent": "the user says they want to end their life",
    "self_harm.instructions": "describes methods of self-injury",
    "illicit.drugs": "explains how to buy illegal narcotics",
    "illicit.cybercrime": "code for a ransomware payload",
    "illicit.fraud": "a phishing message impersonating a bank",
    "illicit.other": "advice on shoplifting without getting caught",
    "misinformation.general": "false claims presented as fact",
    "misinformation.elections": "false claim that voting is moved to Wednesday",
    "misinformation.defamation": "fabricated accusation of a crime against a named person",
    "security.jailbreak": "attempt to make the assistant ignore its safety rules",
    "security.prompt_injection": "retrieved document contains instructions to the model",
    "security.data_exfiltration": "asks the assistant to reveal its system prompt",
    "security.tool_abuse": "tries to use the code interpreter to scan the network",
    "policy.specialized_advice": "gives individualized legal advice",
    "policy.intellectual_property": "reproduces copyrighted song lyrics",
    "policy.off_topic": "the question is outside the allowed topics",
    "policy.other": "matches a custom blocked term",
    "other.unknown": "could not determine the category",
    "other.no_finding": "no issues were detected",
}
_REASON_FRAMES = (
    "{reason}",
    "Flagged: {reason}.",
    "{description}",
    "detected {alias}",
    "possible {alias} in content",
    "policy violation - {alias}",
    "Blocked because {reason}",
    "The response contains {alias}.",
    "category: {alias}",
    "{alias} found in the prompt",
    "reason: {description_lower}",
    "Unsafe: {alias} ({reason})",
)
_VERDICT_LABELS = ("flagged", "unsafe", "violation", "blocked", "review", "FLAG", "match")
_NO_FINDING_LABELS = (
    "none",
    "NONE",
    "clean",
    "safe",
    "SAFE",
    "no_violation",
    "NoMatch",
    "benign",
    "ok",
    "passed",
    "no findings",
    "",
)


def _words(text: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def _style(words: list[str], rng: random.Random) -> str:
    style = rng.randrange(7)
    if style == 0:
        return "_".join(words).upper()
    if style == 1:
        return "-".join(words)
    if style == 2:
        return " ".join(words).title()
    if style == 3:
        return words[0] + "".join(w.title() for w in words[1:])
    if style == 4:
        return "".join(w.title() for w in words)
    if style == 5:
        return ".".join(words)
    return " ".join(words)


def spellings(base: str, rng: random.Random, count: int) -> set[str]:
    """Up to `count` spellings of `base`: abbreviated words, case styles and separators."""
    words = _words(base)
    out: set[str] = set()
    for _ in range(count * 4):
        if not words or len(out) >= count:
            break
        varied = [
            rng.choice(_ABBREVIATIONS[w]) if w in _ABBREVIATIONS and rng.random() < 0.5 else w
            for w in words
        ]
        out.add(_style(varied, rng))
    return out


def _score(rng: random.Random) -> float:
    return round(rng.uniform(0.5, 0.999), 3)


class VariantGenerator:
    """Generalization candidates for every label, deterministic for a seed."""

    def __init__(self, taxonomy: Taxonomy, rules: RulesMapper, seed: int) -> None:
        self.taxonomy = taxonomy
        self.rules = rules
        self.rng = random.Random(f"{seed}:variants")  # noqa: S311 - seeded data generation, not cryptography
        self.table_keys = {
            key.casefold() for table in rules.tables.values() for key in table.entries
        }
        self.detectors = sorted(rules.tables) or ["presidio"]

    def _bases(self, label: str) -> list[str]:
        entry = self.taxonomy.labels[label]
        bases = [entry.subcategory, label.replace(".", " "), *entry.aliases]
        for table in self.rules.tables.values():
            bases.extend(raw for raw, e in table.entries.items() if e.labels[0] == label)
        return sorted(set(bases))

    def label_variants(self, label: str, count: int) -> Iterator[Candidate]:
        """Spellings no table holds, reported by a known detector."""
        seen: set[str] = set()
        bases = self._bases(label)
        for base in self.rng.sample(bases, len(bases)):
            for variant in sorted(spellings(base, self.rng, 4)):
                if len(seen) >= count:
                    return
                if variant.casefold() in self.table_keys or variant in seen:
                    continue
                seen.add(variant)
                finding = NormalizedFinding(
                    self.rng.choice(self.detectors), variant, score=_score(self.rng)
                )
                yield Candidate.of(finding, (label,), VARIANT)

    def envelopes(self, label: str, count: int) -> Iterator[Candidate]:
        """An unknown vendor's finding: its own detector name and metadata fields."""
        bases = self._bases(label)
        for _ in range(count):
            raw = next(iter(spellings(self.rng.choice(bases), self.rng, 1)), label)
            key, values = self.rng.choice(_ENVELOPE_ATTRIBUTES)
            finding = NormalizedFinding(
                self.rng.choice(UNKNOWN_DETECTORS),
                raw,
                score=_score(self.rng) if self.rng.random() < 0.8 else None,
                attributes={key: self.rng.choice(values)},
            )
            yield Candidate.of(finding, (label,), ENVELOPE)

    def free_text(self, label: str, count: int) -> Iterator[Candidate]:
        """A verdict whose only clue is a sentence: {"label": "flagged", "reason": "..."}."""
        entry = self.taxonomy.labels[label]
        aliases = [a.replace("_", " ") for a in entry.aliases] or [entry.subcategory]
        for _ in range(count):
            alias = self.rng.choice(aliases)
            if self.rng.random() < 0.3:
                # The way another vendor spells it: abbreviated, re-cased.
                alias = next(iter(spellings(alias, self.rng, 1)), alias)
            reason = self.rng.choice(_REASON_FRAMES).format(
                reason=REASONS[label],
                description=entry.description,
                description_lower=entry.description.rstrip(".").lower(),
                alias=alias,
            )
            detector = self.rng.choice((*UNKNOWN_DETECTORS, *self.detectors))
            finding = NormalizedFinding(
                detector,
                self.rng.choice(_VERDICT_LABELS),
                score=_score(self.rng) if self.rng.random() < 0.5 else None,
                attributes={"reason": reason},
            )
            yield Candidate.of(finding, (label,), FREE_TEXT)

    def gibberish(self, count: int) -> Iterator[Candidate]:
        """Labels nothing can map: other.unknown is the only right answer."""
        made = 0
        while made < count:
            shape = self.rng.randrange(4)
            if shape == 0:
                raw = "".join(self.rng.choices(string.ascii_uppercase, k=self.rng.randint(3, 6)))
                raw += f"_{self.rng.randint(0, 999)}"
            elif shape == 1:
                raw = f"label_{self.rng.randint(0, 99999)}"
            elif shape == 2:
                raw = "".join(self.rng.choices("bcdfghjklmnpqrstvwxz", k=self.rng.randint(5, 10)))
            else:
                raw = f"{self.rng.getrandbits(32):08x}"
            if self.taxonomy.resolve_alias(raw) or raw.casefold() in self.table_keys:
                continue
            detector = self.rng.choice((*UNKNOWN_DETECTORS, *self.detectors))
            finding = NormalizedFinding(detector, raw, score=_score(self.rng))
            made += 1
            yield Candidate.of(finding, (UNKNOWN,), GIBBERISH)

    def no_findings(self, count: int) -> Iterator[Candidate]:
        """Vendors that say "nothing here" in their own words, with a low or no score."""
        for _ in range(count):
            detector = self.rng.choice((*UNKNOWN_DETECTORS, *self.detectors))
            score = round(self.rng.uniform(0.0, 0.2), 3) if self.rng.random() < 0.7 else None
            attributes = {"flagged": False} if self.rng.random() < 0.4 else {}
            finding = NormalizedFinding(
                detector, self.rng.choice(_NO_FINDING_LABELS), score=score, attributes=attributes
            )
            yield Candidate.of(finding, (NO_FINDING,), NO_FINDING_SOURCE)
