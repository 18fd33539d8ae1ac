"""The baseline of `make bench`: a bare Flask app returning a constant JSON body.

Served by gunicorn with the sandbox's own configuration file (sandbox/gunicorn_conf.py:
SANDBOX_WORKERS workers, sync or gthread as SANDBOX_THREADS says, preload, same access log), so the
only difference with the sandbox is the work the sandbox does per request. Every path answers
the same body, so the bench drives it with the very request mix it sends to the sandbox.
"""
from flask import Flask

app = Flask(__name__)
BODY = {"identifiant": "default", "civilite": "M.", "nom": "ESSAI", "prenom": "JULIEN",
        "dateNaissance": "1990-01-01", "codeCertificationCNAV": "VC", "email": "julien.essai@example.org",
        "adresse": {"codePostal": "75001", "localite": "75001 PARIS", "ligneVoie": "1 RUE DES ESSAIS"},
        "dateInscription": "2026-01-12", "codeCategorieInscription": 1}


@app.get("/api/ping")
def ping():
    return {"status": "ok"}


@app.get("/<path:_path>")
def constant(_path):
    return BODY
