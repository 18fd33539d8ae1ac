"""Routes production has removed, and the text it answers them with (410, before any token check)."""
from __future__ import annotations

_QF_V1_GONE = ("L'API Quotient Familial v1 n'est plus disponible depuis le 31/10/2025. Veuillez utiliser "
               "l'API v2 : https://particulier.api.gouv.fr/catalogue/cnav/quotient_familial")
_SVAIR_GONE = ("Cette URL n'existe plus sur API Particulier depuis le 8 janvier 2024. "
               "Veuillez mettre à jour votre application.")
# path -> (production's text, may the sandbox keep serving it with SANDBOX_SERVE_RETIRED=1)
RETIRED = {
    "/api/v2/composition-familiale": (_QF_V1_GONE, True),
    "/api/caf/famille": (_QF_V1_GONE, False),
    "/api/v2/avis-imposition": (_SVAIR_GONE, False),
    "/api/impots/svair": (_SVAIR_GONE, False),
}
