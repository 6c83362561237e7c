"""The console's two languages: which one a request gets, its words, and its dates.

English is the source language: templates write ``t("Sign in")`` and French comes from
``FRENCH``. A test checks that every phrase the templates use has its French.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["FRENCH", "LANGUAGES", "format_date", "format_when", "negotiate", "translator"]

LANGUAGES = ("en", "fr")

FRENCH: dict[str, str] = {
    "MPI console": "Console MPI",
    "Sign in": "Se connecter",
    "Sign out": "Se déconnecter",
    "Token": "Jeton",
    "Paste the token you were given (supervisor or admin).":
        "Collez le jeton qui vous a été remis (superviseur ou administrateur).",
    "This token is not known or was revoked.": "Ce jeton est inconnu ou a été révoqué.",
    "The console is for supervisors and admins: a registrar's token cannot sign in here.":
        "La console est réservée aux superviseurs et administrateurs : un jeton d'agent d'enregistrement ne peut pas s'y connecter.",
    "Your session has ended after a time without activity: sign in again.":
        "Votre session a pris fin après un temps d'inactivité : reconnectez-vous.",
    "Sign in to see this page.": "Connectez-vous pour voir cette page.",
    "This token has expired.": "Ce jeton a expiré.",
    "Too many failed sign-ins from this address: try again in a minute.":
        "Trop d'échecs de connexion depuis cette adresse : réessayez dans une minute.",
    "Your session has reached its longest allowed length: sign in again.":
        "Votre session a atteint sa durée maximale : reconnectez-vous.",
    "The form had expired: please try again.": "Le formulaire avait expiré : veuillez réessayer.",
    "This request did not come from a console page and was refused.":
        "Cette requête ne venait pas d'une page de la console et a été refusée.",
    "Signed in as": "Connecté en tant que",
    "Language": "Langue",
    "Review queue": "File de revue",
    "Identities": "Identités",
    "Nodes": "Nœuds",
    "Sync": "Synchronisation",
    "Open items": "Éléments ouverts",
    "Region": "Région",
    "Band": "Niveau",
    "Reason": "Motif",
    "Older than (days)": "Plus ancien que (jours)",
    "any": "tous",
    "Filter": "Filtrer",
    "Counts by reason": "Nombre par motif",
    "No open item matches.": "Aucun élément ouvert ne correspond.",
    "Item": "Élément",
    "People": "Personnes",
    "Score": "Score",
    "Opened": "Ouvert le",
    "Open": "Ouvrir",
    "Item %s was decided: merged.": "L'élément %s a été tranché : fusionnés.",
    "Item %s was decided: not the same person.": "L'élément %s a été tranché : pas la même personne.",
    "Review item": "Élément de revue",
    "Back to the queue": "Retour à la file",
    "Field": "Champ",
    "Matched fields": "Champs concordants",
    "First name": "Prénom",
    "Last name": "Nom",
    "Date of birth": "Date de naissance",
    "Sex": "Sexe",
    "Country": "Pays",
    "Phone": "Téléphone",
    "External IDs": "Identifiants externes",
    "Programmes": "Programmes",
    "Cards": "Cartes",
    "Registered": "Enregistré",
    "Registered at": "Enregistré par",
    "Status": "Statut",
    "MPI ID": "ID MPI",
    "none": "aucun",
    "unknown": "inconnu",
    "this replica": "cette réplique",
    "Merged into": "Fusionné dans",
    "Decision": "Décision",
    "Reason (optional)": "Motif (facultatif)",
    "Merge": "Fusionner",
    "Not the same person": "Pas la même personne",
    "The newer registration is merged into the older one, which keeps its ID.":
        "L'enregistrement le plus récent est fusionné dans le plus ancien, qui garde son ID.",
    "This item was decided already.": "Cet élément a déjà été tranché.",
    "This item names one identity, not a pair: it cannot be decided as a merge here.":
        "Cet élément ne nomme qu'une identité, pas une paire : il ne peut pas être tranché par une fusion ici.",
    "supervisor": "superviseur",
    "admin": "administrateur",
    "At a node, review items are shown read-only: the hub decides them once this node has synced.":
        "Sur un nœud, les éléments de revue sont en lecture seule : le hub les tranche une fois ce nœud synchronisé.",
    "settled since (the pair was merged or marked different)": "réglé depuis (paire fusionnée ou déclarée différente)",
    "Search": "Rechercher",
    "Name": "Nom",
    "Programme": "Programme",
    "results": "résultats",
    "No identity matches.": "Aucune identité ne correspond.",
    "Identity": "Identité",
    "You asked for %s, which was merged into this identity.":
        "Vous avez demandé %s, qui a été fusionné dans cette identité.",
    "Merged into this identity": "Fusionnés dans cette identité",
    "Children and wards": "Enfants et personnes à charge",
    "Family": "Famille",
    "estimated": "estimée",
    "(no given name yet)": "(pas encore de prénom)",
    "mother": "mère",
    "father": "père",
    "guardian": "tuteur",
    "caregiver": "personne qui en a la charge",
    "Unmerge": "Défusionner",
    "Reason (required)": "Motif (obligatoire)",
    "%s was unmerged: it is active again.": "%s a été défusionné : il est de nouveau actif.",
    "History": "Historique",
    "When": "Quand",
    "Who": "Qui",
    "What": "Quoi",
    "Details": "Détails",
    "No history recorded at this replica.": "Aucun historique enregistré sur cette réplique.",
    "The history is read from the audit log, which only an admin may read.":
        "L'historique est lu dans le journal d'audit, que seul un administrateur peut lire.",
    "merge": "fusion",
    "unmerge": "défusion",
    "review decision": "décision de revue",
    "register": "enregistrement",
    "registration over a match (force_create)": "enregistrement malgré une concordance (force_create)",
    "patch": "modification",
    "merge link": "lien de fusion",
    "link removed by an unmerge": "lien retiré par une défusion",
    "node": "nœud",
    "Regions": "Régions",
    "State": "État",
    "Last seen": "Vu pour la dernière fois",
    "Acknowledged sequence": "Séquence acquittée",
    "Waiting in the feed": "En attente dans le flux",
    "Refused change sets": "Lots refusés",
    "Changes set aside": "Changements mis de côté",
    "Sequence": "Séquence",
    "Kind": "Type",
    "Changes a node pushed that the hub did not apply, with the reason (not_authorised: the node may not change that identity or may not send that kind of change).":
        "Changements envoyés par un nœud que le hub n'a pas appliqués, avec la raison (not_authorised : le nœud ne peut pas modifier cette identité ou envoyer ce type de changement).",
    "Clock skew": "Décalage d'horloge",
    "never": "jamais",
    "active": "actif",
    "pending": "en attente",
    "revoked": "révoqué",
    "quarantined": "en quarantaine",
    "merged": "fusionné",
    "valid": "valide",
    "No node is enrolled.": "Aucun nœud n'est inscrit.",
    "Dedup": "Dédoublonnage",
    "Queue length": "Longueur de la file",
    "Last sweep": "Dernier balayage",
    "started": "commencé",
    "finished": "terminé",
    "running": "en cours",
    "checked": "vérifiés",
    "queued": "mis en file",
    "No sweep has run yet.": "Aucun balayage n'a encore eu lieu.",
    "fork proofs kept": "preuves de bifurcation conservées",
    "ahead": "en avance",
    "behind": "en retard",
    "at its last push": "lors de son dernier envoi",
    "Sync status": "État de la synchronisation",
    "Matcher model": "Modèle d'appariement",
    "the hub names": "le hub désigne",
    "Hub": "Hub",
    "not enrolled": "non inscrit",
    "Pending changes": "Modifications en attente",
    "Last success": "Dernier succès",
    "Last error": "Dernière erreur",
    "Refused by the hub": "Refusés par le hub",
    "Sequences": "Séquences",
    "Code": "Code",
    "still pending": "toujours en attente",
    "Nothing was refused.": "Rien n'a été refusé.",
    "Review items of this node": "Éléments de revue de ce nœud",
    "Not found": "Introuvable",
    "Something went wrong": "Une erreur s'est produite",
    "Refused": "Refusé",
    "Back": "Retour",
    "Your role may not do this.": "Votre rôle ne permet pas cette action.",
    "certain": "certain",
    "probable": "probable",
    "possible": "possible",
    "force_create": "création forcée",
    "import_probable": "import probable",
    "hard_conflict": "conflit dur",
    "concurrent_edit": "modification concurrente",
    "not_same": "pas la même personne",
    "previous": "précédent",
    "next": "suivant",
}

_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
}


def negotiate(cookie: str | None, accept_language: str) -> str:
    """The language of a request: the switch's cookie, else the browser's preference, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, n, primary))
    return sorted(ranked)[0][2] if ranked else "en"


def translator(lang: str) -> dict[str, str]:
    """English to the language of the page (an empty table for English)."""
    return FRENCH if lang == "fr" else {}


def _parse(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_date(value: str | dt.date | None, lang: str) -> str:
    """A calendar date as the reader writes it: ``15 March 1995`` or ``15 mars 1995``."""
    if value is None or value == "":
        return ""
    day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    first = "1er" if lang == "fr" and day.day == 1 else str(day.day)
    return f"{first} {_MONTHS[lang][day.month - 1]} {day.year}"


def format_when(value: str | None, lang: str) -> str:
    """A UTC timestamp for the reader: ``2 December 2026, 13:54 UTC`` or ``2 décembre 2026 à 13:54 UTC``."""
    if not value:
        return ""
    moment = _parse(value)
    if moment is None:
        return value
    moment = moment.astimezone(dt.UTC)
    joiner = " à " if lang == "fr" else ", "
    return f"{format_date(moment.date(), lang)}{joiner}{moment:%H:%M} UTC"
