"""Relative dates in fixtures (sandbox/population/dates.py): the grammar on frozen days, `fixtures check`,
the answers of a sandbox whose clock is frozen years from now, and the Airtable round trip."""
from __future__ import annotations

import datetime
import shutil

import pytest
import yaml
from click.testing import CliRunner

from sandbox.population import dates
from sandbox.production import clock
from sandbox.airtable.cells import from_record
from sandbox.cli import main

from .conftest import RECIPIENT, ROOT, token_for, v2_headers, v3_headers

D = datetime.date
FIXTURES = ROOT / "fixtures"


def value(text, day):
    return dates.render(text, day)


# --- the grammar ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, day, expected", [
    ("{{ today }}", D(2031, 3, 15), "2031-03-15"),
    ("{{ yesterday }}", D(2031, 3, 1), "2031-02-28"),
    ("{{ tomorrow }}", D(2030, 12, 31), "2031-01-01"),
    ("{{ today - 3 years }}", D(2031, 3, 15), "2028-03-15"),
    ("{{ today + 2 weeks }}", D(2031, 3, 15), "2031-03-29"),
    ("{{ today - 10 days }}", D(2031, 3, 5), "2031-02-23"),
    ("{{ 2024-09-01 + 1 month }}", D(2031, 3, 15), "2024-10-01"),
    # month arithmetic clamps to the month's length; 29 February
    ("{{ today + 1 month }}", D(2031, 1, 31), "2031-02-28"),
    ("{{ today + 1 month }}", D(2032, 1, 31), "2032-02-29"),
    ("{{ today - 1 year }}", D(2032, 2, 29), "2031-02-28"),
    ("{{ today + 4 years }}", D(2032, 2, 29), "2036-02-29"),
    ("{{ yesterday }}", D(2032, 3, 1), "2032-02-29"),
    # month boundaries
    ("{{ first day of last month }}", D(2031, 1, 15), "2030-12-01"),
    ("{{ last day of last month }}", D(2031, 3, 31), "2031-02-28"),
    ("{{ last day of last month }}", D(2032, 3, 1), "2032-02-29"),
    ("{{ first day of next month }}", D(2030, 12, 31), "2031-01-01"),
    ("{{ last day of this month }}", D(2031, 4, 1), "2031-04-30"),
    ("{{ this month }}", D(2031, 3, 15), "2031-03-01"),
    ("{{ last month }}", D(2031, 1, 1), "2030-12-01"),
    ("{{ first day of this month - 2 months + 6 days }}", D(2031, 1, 31), "2030-11-07"),
    ("{{ today - 2 months | end of month }}", D(2031, 4, 30), "2031-02-28"),
    # years
    ("{{ first day of this year }}", D(2031, 12, 31), "2031-01-01"),
    ("{{ last day of last year }}", D(2031, 1, 1), "2030-12-31"),
    ("{{ next year }}", D(2031, 6, 1), "2032-01-01"),
    # the school year starts on 1 September
    ("{{ school year start }}", D(2031, 8, 31), "2030-09-01"),
    ("{{ school year start }}", D(2031, 9, 1), "2031-09-01"),
    ("{{ school year end }}", D(2031, 8, 31), "2031-08-31"),
    ("{{ school year end }}", D(2031, 9, 1), "2032-08-31"),
    ("{{ first day of last school year }}", D(2031, 9, 1), "2030-09-01"),
    ("{{ last day of next school year }}", D(2031, 3, 15), "2032-08-31"),
    ("{{ school year start + 6 days }}", D(2031, 3, 15), "2030-09-07"),
    ("{{ school year end - 2 months }}", D(2031, 3, 15), "2031-06-30"),
    ("{{ today | start of school year }}", D(2031, 1, 10), "2030-09-01"),
    # rounding steps chain
    ("{{ today | start of month | end of year }}", D(2031, 3, 15), "2031-12-31"),
    # output formats
    ("{{ today | date }}", D(2031, 3, 15), "2031-03-15"),
    ("{{ today | datetime }}", D(2031, 3, 15), "2031-03-15T00:00:00"),
    ("{{ today | year }}", D(2031, 3, 15), 2031),
    ("{{ last month | month }}", D(2031, 1, 15), 12),
    ("{{ last month | year }}", D(2031, 1, 15), 2030),
    ("{{ today | day }}", D(2031, 3, 15), 15),
    ("{{ today | school year }}", D(2031, 8, 31), "2030-2031"),
    ("{{ today | school year }}", D(2031, 9, 1), "2031-2032"),
    ("{{ today - 3 years | %d%m%Y }}", D(2031, 3, 5), "05032028"),
    ("{{ first day of last month | %Y-%m-%d }}", D(2031, 3, 15), "2031-02-01"),
    ("{{ today | %d/%m/%Y }}", D(2031, 3, 15), "15/03/2031"),
    # spacing and case do not matter; inside a longer string, the text is replaced
    ("{{TODAY-1 YEAR|YEAR}}", D(2031, 3, 15), 2030),
    ("Rentrée {{ school year start | %d/%m/%Y }}, année {{ today | school year }}", D(2031, 3, 15),
     "Rentrée 01/09/2030, année 2030-2031"),
])
def test_each_form_on_a_frozen_day(text, day, expected):
    got = value(text, day)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text, says", [
    ("{{ todya }}", "unknown day 'todya'"),
    ("{{ today + 3 dayz }}", "cannot read"),
    ("{{ today | year | month }}", "must come last"),
    ("{{ today | fortnight }}", "unknown step 'fortnight'"),
    ("{{ today | %Q }}", "bad date pattern"),
    ("{{ }}", "empty"),
    ("{{ today", "unbalanced"),
    ("{{ this school year }}", "unknown day"),
    ("{{ 2031-02-29 }}", "not a calendar date"),
])
def test_a_wrong_template_says_what_is_wrong(text, says):
    problems = dates.problems({"data": {"x": [text]}})
    assert len(problems) == 1
    where, message = problems[0]
    assert where == "$.payload.data.x[0]"
    assert says in message and "not a relative date" in message


def test_plain_payloads_are_untouched_and_resolution_shares_what_has_no_template():
    plain = {"a": [1, {"b": "2024-01-01"}], "c": None}
    assert dates.resolve(plain, D(2031, 3, 15)) is plain
    mixed = {"keep": {"x": 1}, "dated": {"annee": "{{ today | year }}"}}
    out = dates.resolve(mixed, D(2031, 3, 15))
    assert out == {"keep": {"x": 1}, "dated": {"annee": 2031}}
    assert out["keep"] is mixed["keep"] and mixed["dated"]["annee"] == "{{ today | year }}"


def test_the_clock_is_frozen_by_the_environment(monkeypatch):
    monkeypatch.setattr(clock, "_FROZEN", D(2031, 3, 15))
    assert clock.today() == D(2031, 3, 15)
    monkeypatch.setattr(clock, "_FROZEN", None)
    assert abs((clock.today() - datetime.date.today()).days) <= 1  # Paris's day, not the host's


def test_a_case_resolves_once_per_day(tmp_path):
    from sandbox.population import fixtures as fixture_module
    from sandbox.settings import BUNDLED_SPEC
    from sandbox.production.spec import load_specs
    operations = load_specs([BUNDLED_SPEC]).by_operation_id()
    folder = tmp_path / "fx" / "api_particulier_v3_cnav_quotient_familial_with_civility"
    shutil.copytree(FIXTURES / folder.name, folder)
    loaded = fixture_module.load([tmp_path / "fx"], operations)
    case = next(c for c in loaded.ordered[folder.name] if c.dated)
    first = case.payload_on(D(2031, 3, 15))
    assert case.payload_on(D(2031, 3, 15)) is first
    assert first["data"]["quotient_familial"]["mois"] == 3
    assert case.payload_on(D(2031, 4, 1))["data"]["quotient_familial"]["mois"] == 4
    plain = next(c for c in loaded.ordered[folder.name] if not c.dated)
    assert plain.payload_on(D(2031, 3, 15)) is plain.payload


# --- fixtures check ------------------------------------------------------------------------
def test_fixtures_check_names_the_file_and_path_of_a_bad_template(tmp_path):
    name = "api_particulier_v3_cnav_quotient_familial_with_civility"
    shutil.copytree(FIXTURES / name, tmp_path / name)
    path = next(p for p in sorted((tmp_path / name).glob("*.yaml")) if "{{ today | month }}" in p.read_text())
    path.write_text(path.read_text().replace("{{ today | month }}", "{{ today | mnth }}", 1))
    result = CliRunner().invoke(main, ["fixtures", "check", "--fixtures", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{path}: $.payload.data.quotient_familial.mois: not a relative date: unknown step 'mnth'" in result.output
    assert "1 problem(s)" in result.output


def test_fixtures_check_checks_the_resolved_payload_against_the_schema(tmp_path):
    name = "api_particulier_v3_cnav_quotient_familial_with_civility"
    shutil.copytree(FIXTURES / name, tmp_path / name)
    clean = CliRunner().invoke(main, ["fixtures", "check", "--fixtures", str(tmp_path)])
    assert clean.exit_code == 0, clean.output  # "{{ today | year }}" resolves to the integer the schema wants
    path = next(p for p in sorted((tmp_path / name).glob("*.yaml")) if "{{ today | year }}" in p.read_text())
    path.write_text(path.read_text().replace("{{ today | year }}", "{{ today | date }}", 1))  # a string, not an integer
    result = CliRunner().invoke(main, ["fixtures", "check", "--fixtures", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{path}: $.payload.data.quotient_familial.annee: " in result.output
    assert "is not of type 'integer'" in result.output


# Two of production's rules judge params against today: the DSNJ's 16-25 age range and the
# quotient familial's `annee` (N, N-1 or N-2). The bundled cases they judge write those params
# relative to the day of the call, so nothing ages out within four years; the DSNJ cases whose
# birth day is fixed leave the age range later: the official staging's own keys (as production's
# staging has them) from 2032, the error cases sharing a FranceConnect token's identity from 2035.
FIXED_DSNJ = "api_particulier_v3_dsnj_service_national_with_civility/"
FIXED_BIRTH_DAYS = ("_cle_staging_", "/500_erreur_interne", "/502_erreur_fournisseur", "/503_indisponible_service",
                    "/504_timeout_serveur")


def test_the_bundled_population_checks_clean_on_days_years_apart(monkeypatch):
    for day in (D(2029, 2, 28), D(2030, 12, 31), D(2031, 3, 15), D(2032, 2, 29), D(2035, 9, 1)):
        monkeypatch.setattr(clock, "_FROZEN", day)
        result = CliRunner().invoke(main, ["fixtures", "check"])
        problems = [line for line in result.output.splitlines() if ": $" in line]
        if day.year < 2032:
            assert not problems and result.exit_code == 0, (day, problems[:10])
            continue
        unexpected = [line for line in problems if not (FIXED_DSNJ in line and any(f in line for f in FIXED_BIRTH_DAYS)
                                                        and "$.params: production refuses these params" in line)]
        assert not unexpected, (day, unexpected[:10])


@pytest.mark.slow
def test_fixtures_check_four_years_ahead_is_clean_in_a_subprocess():
    """What a user runs: `SANDBOX_TODAY=<four years ahead> particulier-sandbox fixtures check`."""
    import os
    import subprocess
    import sys
    ahead = clock.today().replace(day=1)
    ahead = ahead.replace(year=ahead.year + 4)
    env = dict(os.environ, SANDBOX_TODAY=ahead.isoformat())
    done = subprocess.run([sys.executable, "-m", "sandbox", "fixtures", "check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert ", 0 problem(s)" in done.stderr  # the summary line; problems would be on stdout
    assert not done.stdout.strip()


ROUX = FIXTURES / "api_particulier_v3_cnav_quotient_familial_with_civility" / "200_officiel_roux_jeanne.yaml"
ROUX_V2 = FIXTURES / "api_particulier_v2_cnav_quotient_familial_v2" / "200_officiel_roux_jeanne.yaml"
ANAIS = FIXTURES / "api_particulier_v3_dsnj_service_national_with_civility" / "200_fictif_demo_anais.yaml"


def _written(path):
    return yaml.safe_load(path.read_text())["params"]


def _on(day, params):
    return {k: dates.resolve(v, day) for k, v in params.items()}


def test_templated_params_are_written_as_templates():
    assert _written(ROUX)["annee"] == "{{ today - 6 months | year }}"
    assert _written(ANAIS)["anneeDateNaissance"] == "{{ today - 23 years | year }}"


def test_cases_with_templated_params_answer_years_from_now_and_are_keyed_per_day(make_app, monkeypatch):
    """One process, the day moving on: the index is keyed anew for each day, the cases answer on
    that day's values, and the persona catalogue and try-it examples show them."""
    monkeypatch.setattr(clock, "_FROZEN", FAR)
    client = make_app(rate_limit="off", ip_rate_limit="off").test_client()
    token = token_for()
    for day in (FAR, D(2031, 1, 10), D(2033, 7, 1)):
        monkeypatch.setattr(clock, "_FROZEN", day)
        roux = _on(day, _written(ROUX))
        assert (roux["annee"], roux["mois"]) == (dates.add_months(day, -6).year, dates.add_months(day, -6).month)
        qf = _get(client, "/v3/dss/quotient_familial/identite", _v3_query(roux), token=token)["data"]
        assert qf["allocataires"][0]["nom_naissance"] == "ROUX"
        v2 = _get(client, "/api/v2/composition-familiale-v2", _v3_query(_on(day, _written(ROUX_V2))), v3=False,
                  token=token)
        assert v2["allocataires"][0]["nomNaissance"] == "ROUX"
        anais = _on(day, _written(ANAIS))
        assert anais["anneeDateNaissance"] == day.year - 23
        dsnj = _get(client, "/v3/dsnj/service_national/identite", _v3_query(anais), token=token)
        assert dsnj["data"]["statut_service_national"] == "pas_en_regle"

        # the params of another day no longer select the case (production refuses or nothing matches)
        stale = dict(anais, anneeDateNaissance=day.year - 30)
        response = client.get("/v3/dsnj/service_national/identite", headers=v3_headers(token),
                              query_string=dict(_v3_query(stale), recipient=RECIPIENT))
        assert response.status_code == 422

        listed = client.get("/sandbox/personas").get_json()["operations"]
        entry = next(o for o in listed if o["operation_id"] == "api_particulier_v3_dsnj_service_national_with_civility")
        shown = next(c for c in entry["cases"] if c["file"] == ANAIS.name)
        assert shown["params"]["anneeDateNaissance"] == day.year - 23
        page = client.get("/docs/personas").get_data(as_text=True)
        assert f"anneeDateNaissance={day.year - 23}" in page


# --- the population, years from now --------------------------------------------------------
FAR = D(2031, 3, 15)


def _get(client, path, params, v3=True, token=None):
    token = token or token_for()
    query = dict(params, recipient=RECIPIENT) if v3 else params
    response = client.get(path, query_string=query, headers=v3_headers(token) if v3 else v2_headers(token))
    assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
    return response.get_json()


CAMILLE_V3 = {"nomNaissance": "BACASABLE", "prenoms[]": ["Camille", "Marie"], "anneeDateNaissance": 1990,
              "moisDateNaissance": 4, "jourDateNaissance": 12, "sexeEtatCivil": "F",
              "codeCogInseePaysNaissance": "99100", "codeCogInseeCommuneNaissance": "75115"}


def test_in_2031_the_bundled_population_still_answers_current_rights(make_app, monkeypatch):
    """Fields checked, on 15 March 2031: quotient familial `mois`/`annee` (v3 and v2
    composition-familiale-v2) = March 2031; MESRI admission `date_debut` <= today <= `date_fin`;
    Cnous `date_rentree` = 2030-09-01; France Travail `inscription.date_debut` in the past with no
    `date_fin`, last `paiements[].date_versement` last month; C2S `date_debut_droit` in the past and
    v2 `dateFin` in the future; RSA `date_debut_droit` within two years; service civique
    `statut_actuel` contract running today; sportif de haut niveau `periode` covering today."""
    monkeypatch.setattr(clock, "_FROZEN", FAR)
    client = make_app(rate_limit="off", ip_rate_limit="off").test_client()
    checked = []

    qf = _get(client, "/v3/dss/quotient_familial/identite", CAMILLE_V3)["data"]["quotient_familial"]
    assert (qf["annee"], qf["mois"]) == (2031, 3)
    assert (qf["annee_calcul"], qf["mois_calcul"]) <= (2031, 3)
    checked.append("quotient_familial.mois/annee")

    qf2 = _get(client, "/api/v2/composition-familiale-v2", _v2_identity(FIXTURES / "api_particulier_v2_cnav_quotient_familial_v2" / "200_bacasable_camille.yaml"), v3=False)
    assert (qf2["annee"], qf2["mois"]) == (2031, 3)
    checked.append("v2 composition-familiale-v2 mois/annee")

    mesri = _get(client, "/v3/mesri/statut_etudiant/ine", {"ine": "1234567890A"})["data"]
    current = [a for a in mesri["admissions"] if a["date_debut"] <= FAR.isoformat() <= a["date_fin"]]
    assert current and current[0]["date_debut"] == "2030-09-01" and current[0]["date_fin"] == "2031-08-31"
    checked.append("mesri admissions date_debut/date_fin")

    cnous = _get(client, "/v4/cnous/etudiant_boursier/ine", {"ine": "1234567890A"})["data"]
    assert cnous["periode_versement_bourse"]["date_rentree"] == "2030-09-01"
    checked.append("cnous date_rentree")

    statut = _get(client, "/v3/france_travail/statut/identifiant", {"identifiant": "123456A"})["data"]["inscription"]
    assert statut["date_debut"] < FAR.isoformat() and statut["date_fin"] is None
    assert statut["date_debut"] >= "2030-01-01"  # a registration of last spring, as when the case was written
    paiements = _get(client, "/v3/france_travail/indemnites/identifiant", {"identifiant": "123456A"})["data"]["paiements"]
    assert max(p["date_versement"] for p in paiements) == "2031-02-01"
    checked.append("france travail inscription, paiements")

    c2s = _get(client, "/v3/dss/complementaire_sante_solidaire/identite", CAMILLE_V3)["data"]
    assert c2s["est_beneficiaire"] is True and "2030-03-15" < c2s["date_debut_droit"] <= FAR.isoformat()
    c2s_v2 = _get(client, "/api/v2/complementaire-sante-solidaire", _v2_identity(
        FIXTURES / "api_particulier_v2_cnav_complementaire_sante_solidaire" / "200_bacasable_camille.yaml"), v3=False)
    assert c2s_v2["dateDebut"] <= FAR.isoformat() < c2s_v2["dateFin"]
    checked.append("c2s date_debut_droit, dateDebut/dateFin")

    rsa_case = yaml.safe_load((FIXTURES / "api_particulier_v3_cnav_revenu_solidarite_active_with_civility"
                               / "200_demo_aicha.yaml").read_text())
    rsa = _get(client, "/v3/dss/revenu_solidarite_active/identite", _v3_query(rsa_case["params"]))["data"]
    assert "2029-03-15" < rsa["date_debut_droit"] <= FAR.isoformat()
    checked.append("rsa date_debut_droit")

    civique_case = yaml.safe_load((FIXTURES / "api_particulier_v3_gip_mds_service_civique_with_civility"
                                   / "200_fictif_zoe.yaml").read_text())
    civique = _get(client, "/v3/gip_mds/service_civique/identite", _v3_query(civique_case["params"]))["data"]
    contract = civique["statut_actuel"]
    assert contract["date_debut_contrat"] <= FAR.isoformat() <= contract["date_fin_contrat"]
    checked.append("service civique statut_actuel")

    sportif = _get(client, "/v3/sdh/statut_sportif/identifiant", {"identifiant": "12345"})["data"]
    periode = sportif["informations_statut"]["periode"]
    assert (periode["date_debut_statut"], periode["date_fin_statut"]) == ("2031-01-01", "2031-12-31")
    checked.append("sdh informations_statut.periode")
    assert len(checked) == 9


def _v3_query(params):
    return {(k + "[]" if isinstance(v, list) else k): v for k, v in params.items()}


def _v2_identity(path):
    return _v3_query(yaml.safe_load(path.read_text())["params"])


# --- Airtable keeps the template text ------------------------------------------------------
def test_a_cell_typed_as_a_number_takes_a_relative_date():
    fields = {"case": "x", "payload.annee": "{{ today | year }}", "payload.mois": "4",
              "_types": '{"payload.annee": "int", "payload.mois": "int"}'}
    doc = from_record(fields, ["case", "payload.annee", "payload.mois", "_types"], "test")
    assert doc == {"payload": {"annee": "{{ today | year }}", "mois": 4}}


@pytest.mark.slow
def test_airtable_push_and_pull_keep_the_template_text(tmp_path):
    from .airtable_server import AirtableServer
    from .test_airtable import BASE, TOKEN, cli
    name = "api_particulier_v3_cnav_quotient_familial_with_civility"
    folder = tmp_path / "fx"
    shutil.copytree(FIXTURES / name, folder / name)
    case = "200_bacasable_camille"
    path = folder / name / f"{case}.yaml"
    server = AirtableServer(TOKEN).start()
    server.state.create_base(BASE)
    try:
        pushed = cli(server, "push", fixtures=folder)
        assert pushed.returncode == 0, pushed.stderr
        cells = server.state.find(BASE, name, case)["fields"]
        assert cells["payload.data.quotient_familial.annee"] == "{{ today | year }}"  # the text, not 2026
        assert cells["payload.data.quotient_familial.mois"] == "{{ today | month }}"

        others = {p.name: p.read_bytes() for p in (folder / name).iterdir() if p != path}
        server.state.edit(BASE, name, case, **{"payload.data.quotient_familial.mois_calcul": "{{ last month | month }}",
                                               "payload.data.quotient_familial.annee_calcul": "{{ last month | year }}"})
        pulled = cli(server, "pull", fixtures=folder)
        assert pulled.returncode == 0, pulled.stderr
        written = yaml.safe_load(path.read_text())["payload"]["data"]["quotient_familial"]
        assert written["mois_calcul"] == "{{ last month | month }}" and written["annee"] == "{{ today | year }}"
        assert {p.name: p.read_bytes() for p in (folder / name).iterdir() if p != path} == others

        before = path.read_bytes()
        server.state.edit(BASE, name, case, **{"payload.data.quotient_familial.mois": "{{ today | mnth }}"})
        refused = cli(server, "pull", fixtures=folder)
        assert refused.returncode == 1
        assert f"case {case}), field payload.data.quotient_familial.mois: not a relative date" in refused.stderr
        assert path.read_bytes() == before
    finally:
        server.stop()
