"""Framework mappings: the shipped file, the spot checks an auditor makes, loader errors, union."""

import copy
from importlib import resources

import pytest
import yaml

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.frameworks import default_frameworks, parse_frameworks
from llama_mapper.domain.schemas import load_schema
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, default_taxonomy


@pytest.fixture(scope="module")
def doc():
    path = resources.files("llama_mapper.domain.catalog") / "frameworks.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def fresh(doc):
    """A private copy of the shipped document for a test to break."""
    return copy.deepcopy(doc)


def controls(label: str, framework: str) -> set[str]:
    return {
        ref.control for ref in default_frameworks().controls(label) if ref.framework == framework
    }


def labels_in(category: str) -> list[str]:
    return [name for name, label in default_taxonomy().labels.items() if label.category == category]


# --- the shipped file ----------------------------------------------------------------------------


def test_shipped_file_loads():
    mappings = default_frameworks()
    assert set(mappings.mappings) == set(default_taxonomy().labels)


def test_framework_keys_are_the_output_schema_enum(doc):
    schema = load_schema("mapper-output")
    enum = schema["properties"]["frameworks"]["items"]["properties"]["framework"]["enum"]
    assert sorted(doc["frameworks"]) == sorted(enum)


def test_every_label_is_mapped_or_has_a_reason(doc):
    labels = set(default_taxonomy().labels)
    mapped, unmapped = set(doc["mappings"]), set(doc["no_control"])
    assert mapped | unmapped == labels
    assert not mapped & unmapped
    # Only the two labels that assert nothing about content go without a control.
    assert unmapped == {NO_FINDING, UNKNOWN}
    assert all(reason.strip() for reason in doc["no_control"].values())


def test_every_referenced_control_exists_in_its_framework(doc):
    for label, by_framework in doc["mappings"].items():
        for framework, ids in by_framework.items():
            catalog = doc["frameworks"][framework]["controls"]
            for control in ids:
                assert isinstance(control, str), f"{label}: {framework} id {control!r}"
                assert control in catalog, f"{label}: {framework} has no control {control!r}"
            assert len(ids) == len(set(ids)), f"{label}: {framework} lists a control twice"


def test_every_catalogued_control_is_used(doc):
    used = {
        (framework, control)
        for by_framework in doc["mappings"].values()
        for framework, ids in by_framework.items()
        for control in ids
    }
    for framework, spec in doc["frameworks"].items():
        for control in spec["controls"]:
            assert (framework, control) in used, f"{framework} {control} is mapped from no label"


def test_each_row_carries_its_frameworks_version(doc):
    versions = {key: str(spec["version"]) for key, spec in doc["frameworks"].items()}
    for label in default_taxonomy().labels:
        for ref in default_frameworks().controls(label):
            assert ref.version == versions[ref.framework]
            assert ref.title == doc["frameworks"][ref.framework]["controls"][ref.control]


def test_no_control_labels_touch_nothing():
    assert default_frameworks().controls(NO_FINDING) == ()
    assert default_frameworks().controls_for([NO_FINDING, UNKNOWN]) == []


# --- spot checks an auditor would make -----------------------------------------------------------


def test_email_address_touches_gdpr_and_soc2():
    assert {"Art.4(1)", "Art.5(1)(f)", "Art.32"} <= controls("pii.email_address", "GDPR")
    assert {"CC6.1", "C1.1"} <= controls("pii.email_address", "SOC2")
    assert "A.5.34" in controls("pii.email_address", "ISO27001")


def test_credit_card_is_pci_scope_and_not_a_special_category():
    pci = controls("financial.credit_card", "PCI_DSS")
    assert {"3.3.1", "3.4.1", "3.5.1", "4.2.1", "12.5.2"} <= pci
    assert "Art.9" not in controls("financial.credit_card", "GDPR")


def test_financial_data_is_never_a_special_category():
    for label in labels_in("financial"):
        assert "Art.9" not in controls(label, "GDPR"), label


@pytest.mark.parametrize("label", ["phi.health_identifier", "phi.medical_condition", "phi.other"])
def test_health_data_touches_hipaa_and_gdpr_article_9(label):
    assert {"164.312(a)(1)", "164.502(a)", "164.502(b)"} <= controls(label, "HIPAA")
    assert {"Art.9", "Art.4(15)"} <= controls(label, "GDPR")


@pytest.mark.parametrize(
    "label",
    ["hate.race_ethnicity", "hate.religion", "hate.sexual_orientation", "hate.disability"],
)
def test_hate_on_an_article_9_trait_touches_article_9(label):
    assert "Art.9" in controls(label, "GDPR")


@pytest.mark.parametrize("label", ["hate.gender", "hate.other"])
def test_hate_on_other_traits_does_not_claim_article_9(label):
    # Sex or gender is not an Art. 9 category (sex life and sexual orientation are).
    assert "Art.9" not in controls(label, "GDPR")


def test_biometric_data_is_a_special_category():
    assert {"Art.4(14)", "Art.9"} <= controls("pii.biometric", "GDPR")


def test_national_id_touches_article_87():
    assert "Art.87" in controls("pii.national_id", "GDPR")


def test_private_key_touches_cryptography_and_authentication():
    assert {"A.8.24", "A.5.17"} <= controls("credentials.private_key", "ISO27001")
    assert "CC6.1" in controls("credentials.private_key", "SOC2")
    assert "164.312(d)" in controls("credentials.private_key", "HIPAA")


def test_hard_coded_passwords_touch_pci_8_6():
    assert {"8.3.2", "8.6.2", "8.6.3"} <= controls("credentials.password", "PCI_DSS")
    assert "164.308(a)(5)(ii)(D)" in controls("credentials.password", "HIPAA")


def test_sexual_content_with_minors_triggers_legal_and_incident_controls():
    iso = controls("sexual.minors", "ISO27001")
    assert {"A.5.5", "A.5.24", "A.5.25", "A.5.26", "A.5.31"} <= iso
    assert "CC7.4" in controls("sexual.minors", "SOC2")


def test_security_findings_are_monitored_events():
    for label in labels_in("security"):
        assert "A.8.16" in controls(label, "ISO27001"), label
        assert "CC7.2" in controls(label, "SOC2"), label
    assert "A.8.28" in controls("security.prompt_injection", "ISO27001")


def test_intellectual_property_touches_a_5_32():
    assert controls("policy.intellectual_property", "ISO27001") == {"A.5.32"}


@pytest.mark.parametrize(
    "category",
    ["toxicity", "hate", "violence", "sexual", "self_harm", "illicit", "misinformation"],
)
def test_content_safety_labels_touch_acceptable_use(category):
    for label in labels_in(category):
        assert "A.5.10" in controls(label, "ISO27001"), label


def test_only_card_data_credentials_and_injection_touch_pci():
    touching = {
        label
        for label in default_taxonomy().labels
        if any(ref.framework == "PCI_DSS" for ref in default_frameworks().controls(label))
    }
    assert touching == {
        "financial.credit_card",
        "security.prompt_injection",
        *labels_in("credentials"),
    }


# --- loader errors -------------------------------------------------------------------------------


def parse(doc):
    return parse_frameworks(doc, default_taxonomy())


def test_loader_rejects_an_unknown_framework(fresh):
    fresh["mappings"]["pii.email_address"]["NIST_800_53"] = ["AC-3"]
    with pytest.raises(
        InvalidArgument, match=r"pii\.email_address: unknown framework 'NIST_800_53'"
    ):
        parse(fresh)


def test_loader_rejects_an_unknown_control_id(fresh):
    fresh["mappings"]["pii.email_address"]["GDPR"].append("Art.999")
    with pytest.raises(
        InvalidArgument, match=r"pii\.email_address: GDPR has no control 'Art\.999'"
    ):
        parse(fresh)


def test_loader_rejects_an_unmapped_label(fresh):
    del fresh["mappings"]["phi.medical_condition"]
    with pytest.raises(InvalidArgument, match=r"no no_control entry: \['phi\.medical_condition'\]"):
        parse(fresh)


def test_loader_rejects_a_label_both_mapped_and_without_control(fresh):
    fresh["no_control"]["pii.email_address"] = "not personal data"
    with pytest.raises(InvalidArgument, match=r"pii\.email_address is both mapped and listed"):
        parse(fresh)


@pytest.mark.parametrize("reason", ["", None])
def test_loader_rejects_no_control_without_a_reason(fresh, reason):
    fresh["no_control"][UNKNOWN] = reason
    with pytest.raises(InvalidArgument, match=r"other\.unknown is listed under no_control without"):
        parse(fresh)


def test_loader_rejects_a_label_outside_the_taxonomy(fresh):
    fresh["mappings"]["pii.shoe_size"] = {"GDPR": ["Art.4(1)"]}
    with pytest.raises(InvalidArgument, match=r"'pii\.shoe_size' is not in taxonomy"):
        parse(fresh)


@pytest.mark.parametrize("empty", [{}, None, {"GDPR": []}])
def test_loader_rejects_a_mapping_to_no_control(fresh, empty):
    # An empty mapping would mean "no control" without the reason no_control demands.
    fresh["mappings"]["toxicity.profanity"] = empty
    with pytest.raises(InvalidArgument, match=r"toxicity\.profanity is mapped to no control"):
        parse(fresh)


def test_loader_rejects_an_id_yaml_read_as_a_number(fresh):
    fresh["frameworks"]["PCI_DSS"]["controls"]["12.10"] = "Incident response plan"
    fresh["mappings"]["financial.credit_card"].update(
        yaml.safe_load("PCI_DSS: [3.4, 12.10]")  # unquoted: floats 3.4 and 12.1
    )
    with pytest.raises(InvalidArgument, match=r"financial\.credit_card: PCI_DSS: control id 3\.4"):
        parse(fresh)


def test_loader_rejects_a_framework_without_a_version(fresh):
    del fresh["frameworks"]["HIPAA"]["version"]
    with pytest.raises(InvalidArgument, match=r"framework 'HIPAA' needs a name, a version"):
        parse(fresh)


def test_loader_errors_are_invalid_argument_on_the_wire(fresh):
    fresh["mappings"]["pii.email_address"]["GDPR"] = ["Art.999"]
    with pytest.raises(InvalidArgument) as caught:
        parse(fresh)
    assert caught.value.code == "INVALID_ARGUMENT"


# --- the union of controls -----------------------------------------------------------------------


def test_controls_for_deduplicates():
    mappings = default_frameworks()
    one = mappings.controls_for(["pii.email_address"])
    both = mappings.controls_for(["pii.email_address", "pii.phone_number", "pii.email_address"])
    assert both == one  # the two labels touch the same controls
    rows = [(r["framework"], r["control"]) for r in both]
    assert len(rows) == len(set(rows))


def test_controls_for_orders_by_framework_then_natural_control_order():
    rows = default_frameworks().controls_for(
        ["sexual.minors", "financial.credit_card", "credentials.private_key", "pii.national_id"]
    )
    frameworks = [r["framework"] for r in rows]
    assert frameworks == sorted(frameworks)
    iso = [r["control"] for r in rows if r["framework"] == "ISO27001"]
    assert iso.index("A.5.5") < iso.index("A.5.10") < iso.index("A.5.31") < iso.index("A.8.5")
    assert iso.index("A.8.5") < iso.index("A.8.24")
    pci = [r["control"] for r in rows if r["framework"] == "PCI_DSS"]
    assert pci[0] == "3.2.1" and pci[-1] == "12.5.2"
    gdpr = [r["control"] for r in rows if r["framework"] == "GDPR"]
    assert gdpr.index("Art.4(1)") < gdpr.index("Art.32") < gdpr.index("Art.87")


def test_controls_for_is_independent_of_label_order():
    labels = ["security.prompt_injection", "pii.biometric", "credentials.password"]
    mappings = default_frameworks()
    assert mappings.controls_for(labels) == mappings.controls_for(reversed(labels))


def test_controls_for_rows_match_the_output_schema():
    item = load_schema("mapper-output")["properties"]["frameworks"]["items"]
    rows = default_frameworks().controls_for(default_taxonomy().labels)
    for row in rows:
        assert set(row) <= set(item["properties"])
        assert set(item["required"]) <= set(row)
        assert row["framework"] in item["properties"]["framework"]["enum"]
        assert row["version"] and row["control"]


def test_controls_for_rejects_a_label_outside_the_taxonomy():
    with pytest.raises(InvalidArgument, match=r"'pii\.shoe_size' has no framework mapping"):
        default_frameworks().controls_for(["pii.shoe_size"])
