"""Faker-generated documents with planted personal data and secrets, for the real detectors to scan."""

from __future__ import annotations

import random
import string

from faker import Faker

# Sentences that plant one entity each; Presidio's context words ("email", "phone", "ssn") sit next
# to some of them and not others, so context-enhanced and plain scores both occur.
_PII_TEMPLATES = (
    "Please contact {name} about the renewal.",
    "Reach me at {email} before Friday.",
    "My email is {email}.",
    "Call {phone} if the parcel is late.",
    "phone number: {phone}",
    "Ship it to {address}.",
    "She moved to {city} last year.",
    "Born on {dob}, the applicant is {age} years old.",
    "SSN {ssn} was entered on the form.",
    "The social security number is {ssn}.",
    "Card {card} expires {expiry}.",
    "Pay with credit card {card}.",
    "Wire the funds to IBAN {iban}.",
    "The request came from {ipv4}.",
    "Login from IP address {ipv6}.",
    "See my profile at {url}.",
    "Driver license {license} was scanned.",
    "Passport {passport} was checked at the gate.",
    "The wallet {btc} received the payment.",
    "NHS number {nhs} was updated.",
    "Meeting with {name} from {company} on {date}.",
    "Patient {name} was seen at {company} clinic.",
    "Dr. {name} reviewed the notes on {date}.",
    "Nothing sensitive here, just {word} and {word2}.",
)


def _nhs(rng: random.Random) -> str:
    # A valid NHS number: nine digits and a mod-11 check digit that is not 10.
    while True:
        digits = [rng.randint(0, 9) for _ in range(9)]
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def pii_texts(count: int, seed: int) -> list[str]:
    """`count` short documents, each with two to four planted entities."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)  # noqa: S311 - seeded data generation, not cryptography
    texts = []
    for _ in range(count):
        sentences = []
        for template in rng.sample(_PII_TEMPLATES, rng.randint(2, 4)):
            sentences.append(
                template.format(
                    name=fake.name(),
                    email=fake.email(),
                    phone=fake.phone_number(),
                    address=fake.address().replace("\n", ", "),
                    city=fake.city(),
                    dob=fake.date_of_birth().strftime("%B %d, %Y"),
                    age=rng.randint(18, 90),
                    ssn=fake.ssn(),
                    card=fake.credit_card_number(),
                    expiry=fake.credit_card_expire(),
                    iban=fake.iban(),
                    ipv4=fake.ipv4(),
                    ipv6=fake.ipv6(),
                    url=fake.url() + fake.user_name(),
                    license=fake.bothify("?#######").upper(),
                    passport=fake.bothify("#########"),
                    btc="1" + "".join(rng.choices(string.ascii_letters + string.digits, k=33)),
                    nhs=_nhs(rng),
                    company=fake.company(),
                    date=fake.date(),
                    word=fake.word(),
                    word2=fake.word(),
                )
            )
        texts.append(" ".join(sentences))
    return texts


def _token(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choices(alphabet, k=length))


_ALNUM = string.ascii_letters + string.digits
_UPPER = string.ascii_uppercase + string.digits
_HEX = "0123456789abcdef"


def _secret_lines(rng: random.Random, fake: Faker) -> list[str]:
    b64 = _ALNUM + "+/"
    return [
        f"aws_access_key_id = AKIA{_token(rng, _UPPER, 16)}",
        f"aws_secret_access_key = {_token(rng, b64, 40)}",
        f"GITHUB_TOKEN=ghp_{_token(rng, _ALNUM, 36)}",
        f"slack: xoxb-{_token(rng, string.digits, 12)}-{_token(rng, string.digits, 13)}-{_token(rng, _ALNUM, 24)}",
        f"stripe_key = sk_live_{_token(rng, _ALNUM, 24)}",
        f"password = '{fake.password(length=14)}'",
        f"db_password: {fake.password(length=16)}",
        f"DATABASE_URL=postgres://{fake.user_name()}:{fake.password(length=12, special_chars=False)}@{fake.domain_name()}:5432/app",
        f"jwt = eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI{_token(rng, _ALNUM, 20)}In0.{_token(rng, _ALNUM, 43)}",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        f"hex_secret = '{_token(rng, _HEX, 40)}'",
        f"b64_blob = '{_token(rng, b64, 44)}'",
        f"SENDGRID_API_KEY=SG.{_token(rng, _ALNUM, 22)}.{_token(rng, _ALNUM, 43)}",
        f"twilio = SK{_token(rng, _HEX, 32)}",
        f"npm_token = npm_{_token(rng, _ALNUM, 36)}",
        f"discord_bot = {_token(rng, 'MNO', 1)}{_token(rng, _ALNUM, 23)}.{_token(rng, _ALNUM, 6)}.{_token(rng, _ALNUM, 27)}",
        f"mailchimp = {_token(rng, _HEX, 32)}-us{rng.randint(1, 20)}",
        f"AccountKey={_token(rng, b64, 86)}==",
        f"telegram = {rng.randint(10**8, 10**9)}:AA{_token(rng, _ALNUM, 33)}",
        f"pypi = pypi-AgEIcHlwaS5vcmc{_token(rng, _ALNUM, 70)}",
        f"square = sq0csp-{_token(rng, _ALNUM, 43)}",
        f"artifactory = AKC{_token(rng, _ALNUM, 70)}",
        f"# owner {fake.name()} ({fake.email()})",
        f"timeout = {rng.randint(1, 120)}",
    ]


def secret_texts(count: int, seed: int) -> list[str]:
    """`count` config-file-like documents, each with one to four planted secrets among plain lines."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)  # noqa: S311 - seeded data generation, not cryptography
    texts = []
    for _ in range(count):
        lines = rng.sample(_secret_lines(rng, fake), rng.randint(2, 5))
        texts.append("\n".join(lines) + "\n")
    return texts
