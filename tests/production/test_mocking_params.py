"""The key production's staging finds a mock case under (sandbox/production/mocking_params.py,
data/mocking_params.yml). Each test names the production file it mirrors (under siade/)."""
from __future__ import annotations

from werkzeug.datastructures import MultiDict

from sandbox.production import mocking_params
from sandbox.production.spec import load_specs
from sandbox.settings import BUNDLED_SPEC


# concerns/api_particulier/civility_parameters.rb reads these on every civil-status route; the
# Cnous v3 and v4 routes share one controller (cnous/etudiant_boursier_with_civility_controller.rb)
READ_UNDECLARED = {"nomUsage", "nomCommuneNaissance", "codeCogInseeDepartementNaissance", "codeCogInseePaysNaissance",
                   "campaignYear"}


def _key(operation_id, query):
    return dict(mocking_params.reader(operation_id).key(mocking_params.from_args(MultiDict(query))))


def test_every_served_route_has_its_providers_key():
    """A route no entry lists is keyed on everything sent: an unread parameter would then make it
    miss. Every route of the bundled spec production still serves must have its provider's key."""
    for operation_id, op in load_specs([BUNDLED_SPEC]).by_operation_id().items():
        if op.gone:
            continue
        reader = mocking_params.reader(operation_id)
        assert reader is not mocking_params.EVERYTHING, f"{operation_id}: no provider in mocking_params.yml"
        read = {rule.param for variant in reader.variants if not variant.france_connect for rule in variant.keys}
        declared = {p.key for p in op.params}
        # every key is fed by a parameter the route takes, or one production's controller reads
        # though the spec does not declare it (on FranceConnect-only routes the identity feeds it)
        assert op.france_connect_only or read <= declared | READ_UNDECLARED, (operation_id, read - declared)


def test_recipient_and_unread_parameters_are_in_no_key():
    """app/interactors/make_request.rb (mocking_params drops recipient); france_travail/make_request.rb."""
    assert _key("api_particulier_v3_france_travail_statut_with_identifiant",
                [("identifiant", "Zoe"), ("recipient", "13002526500013"), ("utm_source", "x")]) == {
        "identifiant": ("zoe",)}


def test_cnav_reads_date_parts_as_integers_and_the_commune_only_for_a_birth_in_france():
    """app/interactors/cnav/make_request.rb: int_or_nil, code_cog_insee_commune_de_naissance."""
    op = "api_particulier_v3_cnav_quotient_familial_with_civility"
    abroad = _key(op, [("nomNaissance", "Demo"), ("prenoms[]", "Aïcha"), ("anneeDateNaissance", "1994"),
                       ("moisDateNaissance", "02"), ("jourDateNaissance", "0"), ("codeCogInseePaysNaissance", "99350"),
                       ("codeCogInseeCommuneNaissance", "75115"), ("nomUsage", "")])
    assert abroad == {"nomNaissance": ("demo",), "prenoms": ("aïcha",), "anneeDateNaissance": ("1994",),
                      "moisDateNaissance": ("2",), "codeCogInseePaysNaissance": ("99350",)}
    france = _key(op, [("codeCogInseePaysNaissance", "99100"), ("codeCogInseeCommuneNaissance", "75115")])
    assert france["codeCogInseeCommuneNaissance"] == ("75115",)


def test_v2_etudiants_with_an_ine_reads_the_ine_alone():
    """app/controllers/api_particulier/v2/mesri/student_status_controller.rb: call_with_ine?"""
    op = "api_particulier_v2_mesri_student_status"
    assert _key(op, [("ine", "999000003CC"), ("nom", "Essai"), ("prenom", "Léa")]) == {"ine": ("999000003cc",)}
    # a blank INE is no INE: the civil status is read (`params[:ine].present?`)
    assert _key(op, [("ine", ""), ("nom", "Essai"), ("dateDeNaissance", "2004-3-18")]) == {
        "nom": ("essai",), "dateDeNaissance": ("2004-03-18",)}


def test_v2_cnous_splits_the_first_names_and_the_birth_date():
    """app/controllers/api_particulier/v2/cnous/student_scholarship_controller.rb: civility_params."""
    assert _key("api_particulier_v2_cnous_student_scholarship",
                [("nom", "Bacasable"), ("prenoms", "Camille  Marie"), ("dateDeNaissance", "1990-04-12")]) == {
        "nom_naissance": ("bacasable",), "prenoms": ("camille", "marie"), "annee_date_naissance": ("1990",),
        "mois_date_naissance": ("04",), "jour_date_naissance": ("12",)}


def test_a_case_written_with_a_franceconnect_identity_is_keyed_on_it_and_a_request_never_is():
    """cnous/student_scholarship_with_france_connect/make_request.rb: mocking_params_v2 (the identity)."""
    reader = mocking_params.reader("api_particulier_v2_cnous_student_scholarship")
    claims = {"given_name": "Jean", "family_name": "MARTIN", "birthdate": "2001-01-01", "gender": "male",
              "birthplace": "75002", "preferred_username": "x"}
    assert dict(reader.key(mocking_params.from_case(claims), case=True)) == {
        "given_name": ("jean",), "family_name": ("martin",), "birthdate": ("2001-01-01",), "gender": ("male",),
        "birthplace": ("75002",)}
    assert reader.key(mocking_params.from_args(MultiDict(claims))) == frozenset()


def test_a_case_file_and_a_request_give_one_key():
    """app/services/mock_data_backend.rb (deep_downcase of the file's params) and mock_service.rb."""
    op = "api_particulier_v3_mesri_statut_etudiant_with_civility"
    case = {"nomNaissance": "ESSAI", "prenoms": ["Léa", "Marie"], "anneeDateNaissance": 2004,
            "moisDateNaissance": 3, "jourDateNaissance": 18, "sexeEtatCivil": "F"}
    query = [("nomNaissance", "essai"), ("prenoms[]", "LÉA"), ("prenoms[]", "marie"), ("anneeDateNaissance", "2004"),
             ("moisDateNaissance", "03"), ("jourDateNaissance", "18"), ("sexeEtatCivil", "f")]
    reader = mocking_params.reader(op)
    assert reader.key(mocking_params.from_case(case), case=True) == \
        reader.key(mocking_params.from_args(MultiDict(query)))


def test_a_case_file_may_spell_the_parameter_names_in_any_case_a_request_may_not():
    """Rails' params are read as spelled (a request's `NOMNAISSANCE` is not `nomNaissance`); a case
    file's names are the author's, matched to the route's whatever their letter case."""
    reader = mocking_params.reader("api_particulier_v3_france_travail_statut_with_identifiant")
    assert dict(reader.key(mocking_params.from_case({"Identifiant": "Zoe"}), case=True)) == {"identifiant": ("zoe",)}
    assert reader.key(mocking_params.from_args(MultiDict([("IDENTIFIANT", "zoe")]))) == frozenset()
