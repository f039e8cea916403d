"""Every customer- and agent-facing sentence, in French and English, kept out of the logic.

Keys are stable: config.yaml's ``messages:`` section overrides any of them per language.
Placeholders use ``str.format`` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from babel.dates import format_datetime

CATALOG: dict[str, dict[str, str]] = {
    "fr": {
        "greeting": "Bonjour{name} ! Je suis l'assistant du service client. Posez-moi votre "
        "question ; à tout moment, écrivez /agent pour parler à un conseiller.",
        "help": "Écrivez votre question en quelques mots. /agent : parler à un conseiller. "
        "/cancel : annuler une demande en attente.",
        "unknown_command": "Je ne connais pas la commande /{command}. {help}",
        "empty_message": "Je n'ai pas reçu de texte. Écrivez votre question en quelques mots.",
        "text_only": "Je ne sais lire que du texte pour l'instant. Décrivez votre demande par "
        "écrit, ou écrivez /agent pour qu'un conseiller voie votre pièce jointe.",
        "did_it_help": "Cette réponse a-t-elle résolu votre problème ?",
        "choice_yes": "Oui, merci",
        "choice_no": "Non",
        "choice_agent": "Parler à un conseiller",
        "did_you_mean": "Je ne suis pas sûr d'avoir compris. Voulez-vous dire :\n{options}",
        "choice_other": "Autre chose",
        "not_sure": "Je ne suis pas sûr d'avoir compris. Pouvez-vous reformuler votre question ? "
        "Vous pouvez aussi parler à un conseiller.",
        "glad_to_help": "Ravi d'avoir pu vous aider !",
        "ask_question": "Très bien. Quelle est votre question ?",
        "handoff_open": "Je vous mets en relation avec un conseiller, il vous répond dans "
        "quelques instants.",
        "handoff_closed": "Je transmets votre demande à un conseiller. Notre équipe est "
        "actuellement absente : elle vous répondra {when}.",
        "handoff_complaint": "Je suis désolé pour ce désagrément. Je transmets votre message "
        "tout de suite à un conseiller.",
        "already_queued": "Votre demande est bien en attente : un conseiller vous répond dès "
        "que possible.",
        "agent_joined": "{agent} a rejoint la conversation.",
        "cancelled": "Votre demande est annulée. Nous reviendrons vers vous si besoin ; "
        "écrivez-nous à tout moment.",
        "nothing_to_cancel": "Vous n'avez pas de demande en attente.",
        "abandoned": "Nous n'avons pas pu vous répondre à temps, désolés. Un conseiller "
        "reviendra vers vous dès que possible.",
        "resolved": "Votre demande est marquée comme résolue. Merci de nous avoir contactés !",
        "nps_question": "Sur une échelle de 0 à 10, à quel point recommanderiez-vous notre "
        "entreprise à vos amis ou à votre famille ?",
        "nps_reprompt": "Merci de répondre par un nombre de 0 à 10 (0 = pas du tout, 10 = "
        "certainement), ou d'appuyer sur un bouton.",
        "csat_question": "Comment évaluez-vous l'aide que vous avez reçue ?",
        "csat_reprompt": "Merci de choisir un des cinq smileys (de 😡 à 😍), ou un chiffre "
        "de 1 à 5.",
        "comment_question": "Souhaitez-vous ajouter un commentaire ? Écrivez-le, ou appuyez "
        "sur « Passer ».",
        "choice_skip": "Passer",
        "survey_thanks": "Merci pour votre réponse, elle nous aide à nous améliorer !",
        "question_closed": "Cette question est close.",
        "not_your_question": "Ce bouton ne vous est pas destiné.",
        "forgotten": "C'est fait : vos données (messages, réponses, nom) sont effacées. "
        "Au revoir !",
        "forget_confirm": "Voulez-vous vraiment effacer vos données (vos messages, vos réponses "
        "aux enquêtes et votre nom) ? C'est définitif.",
        "choice_forget_yes": "Oui, effacer mes données",
        "choice_forget_no": "Annuler",
        "forget_cancelled": "D'accord, rien n'a été effacé.",
        # agents' desk
        "agents_only": "Réservé aux agents du service client.",
        "status_waiting": "En attente",
        "status_taken": "Pris en charge par {agent}",
        "status_resolved": "Résolu",
        "status_abandoned": "Abandonné",
        "status_closed": "Clos",
        "reason_requested": "Le client demande un conseiller",
        "reason_complaint": "Réclamation",
        "reason_not_understood": "Le bot n'a pas compris",
        "reason_not_helpful": "La réponse du bot n'a pas aidé",
        "reason_transfer": "Transfert",
        "button_take": "Prendre",
        "button_resolve": "Résoudre",
        "taken_by": "{agent} prend la conversation.",
        "already_taken": "Déjà pris en charge par {agent}.",
        "resolved_by": "Résolu par {agent}{tag}.",
        "transferred": "{agent} remet la conversation dans la file.",
        "transferred_to": "{agent} transfère la conversation à {target}.",
        "not_an_agent": "{target} n'est pas un agent : transfert impossible.",
        "not_open": "Cette conversation n'est plus en cours de traitement.",
        "already_in_queue": "Cette conversation est déjà dans la file d'attente : "
        "transférez-la à un agent, ou prenez-la.",
        "customer_unreachable": "Le client n'est plus joignable ; le message n'a pas été transmis.",
        "customer_left": "Le client est parti ({reason}).",
        "abandoned_desk": "Conversation #{id} abandonnée ({reason}) : recontactez le client.",
        "reminder": "Conversation #{id} en attente depuis {minutes} min.",
        "detractor_alert": "⚠️ Détracteur : {customer} a donné {score}/10 (conversation #{id}"
        "{agent}). Recontactez ce client.",
        "detractor_comment": "Commentaire de {customer} (#{id}) : {comment}",
        "note_saved": "Note interne enregistrée (non envoyée au client).",
        "unknown_conversation": "Conversation inconnue.",
        "title": "#{id} · {customer}{topic}",
        "erased_customer": "client effacé (RGPD)",
        # follow-ups (closing the loop)
        "followup_csat_alert": "⚠️ Client insatisfait : {customer} a donné {face} ({rating}/5) "
        "(conversation #{id}{agent}). Recontactez ce client.",
        "followup_line": "Suivi #{id} — responsable : {owner} ; à recontacter avant {due}.",
        "followup_unassigned": "personne (prenez-le)",
        "followup_reminder": "⏰ Suivi #{id} en retard : {customer} ({scores}) n'a pas été "
        "recontacté (échéance {due}) ; responsable : {owner}.",
        "followup_button_take": "Je m'en charge",
        "followup_button_contacted": "Contacté",
        "followup_button_resolved": "Résolu",
        "followup_button_unreachable": "Injoignable",
        "followup_taken": "Suivi #{id} : pris en charge par {agent}.",
        "followup_contacted": "Suivi #{id} : client contacté par {agent}.",
        "followup_resolved": "Suivi #{id} : résolu par {agent}.",
        "followup_unreachable": "Suivi #{id} : client injoignable ({agent}).",
        "followup_note_saved": "Suivi #{id} : note enregistrée.",
        "followup_ask_note": "Ajoutez le résultat : {command} {id} note <texte>.",
        "followup_unknown": "Suivi #{id} inconnu.",
        "followup_closed": "Le suivi #{id} est déjà clos ({status}).",
        "followup_usage": "Usage : {command} ID take|contacted|resolved|unreachable|note [note]",
        "complaint_marked": "Conversation #{id} marquée comme réclamation par {agent}.",
        "complaint_already": "Cette conversation est déjà une réclamation.",
        "complaint_none": "Cette conversation n'est pas une réclamation.",
        "complaint_unknown": "{field} inconnue « {given} ». Valeurs possibles : {valid}.",
        "complaint_field_cause": "Cause",
        "complaint_field_category": "Catégorie",
        "complaint_field_solution": "Solution",
        "complaint_menu": "Réclamation #{id} : choisissez la cause et la solution proposée.",
        "complaint_set": "Réclamation #{id} : {field} → {value} ({agent}).",
        "complaint_summary": "Réclamation : cause {cause}, solution {solution}{note}.",
        "complaint_unset": "(non renseignée)",
        "solution_refund": "Remboursement",
        "solution_partial_refund": "Remboursement partiel",
        "solution_replacement": "Remplacement",
        "solution_voucher": "Bon d'achat",
        "solution_free_delivery": "Livraison offerte",
        "solution_mediation": "Médiation",
        "solution_none": "Aucune",
        # routing: queue position, expected wait, presence, assignment, escalation
        "handoff_queued": "Je vous mets en relation avec un conseiller.",
        "queue_first": "Vous êtes le prochain dans la file d'attente.",
        "queue_position": "Vous êtes en position {position} dans la file d'attente.",
        "queue_wait": "Attente estimée : {wait}.",
        "queue_update": "Votre place a changé.",
        "wait_few": "quelques minutes",
        "wait_minutes": "environ {minutes} minutes",
        "wait_hour": "environ une heure",
        "wait_hours": "plus d'une heure",
        "presence_available": "{agent} est disponible : les nouvelles conversations peuvent "
        "lui être attribuées.",
        "presence_available_closed": "{agent} est disponible (hors des heures d'ouverture : "
        "rien ne lui sera attribué avant la réouverture).",
        "presence_away": "{agent} est absent : plus aucune conversation ne lui est attribuée.",
        "routed_to_you": "Cette conversation vous est attribuée : à vous de répondre.",
        "agent_joined_unnamed": "Un conseiller a rejoint la conversation.",
        "escalated": "La conversation #{id} attend depuis {minutes} min sans être prise en charge.",
        # agent tools (issue 17): display names, saved replies, customer context
        "an_agent": "Un conseiller",
        "reply_customer": "cher client",
        "saved_replies_list": "Réponses enregistrées ({command} RACCOURCI pour en envoyer une ; "
        "rien n'est envoyé au client) :\n{replies}",
        "saved_replies_none": "Aucune réponse enregistrée : ajoutez-en dans replies.yaml "
        "(replies.path dans config.yaml).",
        "saved_reply_unknown": "Pas de réponse enregistrée « {shortcut} ».{close} "
        "{command} seul donne la liste.",
        "saved_reply_close": " Vouliez-vous dire : {options} ?",
        "context_first": "Premier contact",
        "context_count": "{count} conversation(s) avant celle-ci",
        "context_last": "dernière le {date} : {topic}",
        "context_scores": "dernier avis : {scores}",
        "context_followup": "suivi en cours ({status})",
    },
    "en": {
        "greeting": "Hello{name}! I'm the customer service assistant. Ask me your question; "
        "type /agent at any time to talk to a person.",
        "help": "Write your question in a few words. /agent: talk to a person. /cancel: cancel "
        "a waiting request.",
        "unknown_command": "I don't know the command /{command}. {help}",
        "empty_message": "I didn't get any text. Please write your question in a few words.",
        "text_only": "I can only read text for now. Please describe your request in writing, "
        "or type /agent so that a person can see your attachment.",
        "did_it_help": "Did this answer solve your problem?",
        "choice_yes": "Yes, thanks",
        "choice_no": "No",
        "choice_agent": "Talk to a person",
        "did_you_mean": "I'm not sure I understood. Did you mean:\n{options}",
        "choice_other": "Something else",
        "not_sure": "I'm not sure I understood. Could you rephrase your question? You can "
        "also talk to a person.",
        "glad_to_help": "Glad I could help!",
        "ask_question": "All right. What is your question?",
        "handoff_open": "I'm putting you through to a member of our team; they will answer "
        "shortly.",
        "handoff_closed": "I'm passing your request to our team. We're closed right now: we "
        "will answer {when}.",
        "handoff_complaint": "I'm sorry about this. I'm passing your message to a member of "
        "our team right away.",
        "already_queued": "Your request is in the queue: someone will answer as soon as possible.",
        "agent_joined": "{agent} joined the conversation.",
        "cancelled": "Your request is cancelled. We'll get back to you if needed; write to us "
        "any time.",
        "nothing_to_cancel": "You have no waiting request.",
        "abandoned": "Sorry we couldn't answer in time. Someone will get back to you as soon "
        "as possible.",
        "resolved": "Your request is marked as resolved. Thanks for contacting us!",
        "nps_question": "On a scale from 0 to 10, how likely are you to recommend our company "
        "to a friend or family member?",
        "nps_reprompt": "Please answer with a number from 0 to 10 (0 = not at all, 10 = "
        "definitely), or press a button.",
        "csat_question": "How would you rate the help you received?",
        "csat_reprompt": "Please pick one of the five smileys (😡 to 😍), or a number from 1 to 5.",
        "comment_question": "Would you like to add a comment? Write it, or press Skip.",
        "choice_skip": "Skip",
        "survey_thanks": "Thank you for your answer, it helps us improve!",
        "question_closed": "This question is closed.",
        "not_your_question": "This button is not for you.",
        "forgotten": "Done: your data (messages, answers, name) has been erased. Goodbye!",
        "forget_confirm": "Do you really want to erase your data (your messages, your survey "
        "answers and your name)? This cannot be undone.",
        "choice_forget_yes": "Yes, erase my data",
        "choice_forget_no": "Cancel",
        "forget_cancelled": "All right, nothing was erased.",
        "agents_only": "Only customer-service agents can do this.",
        "status_waiting": "Waiting",
        "status_taken": "Taken by {agent}",
        "status_resolved": "Resolved",
        "status_abandoned": "Abandoned",
        "status_closed": "Closed",
        "reason_requested": "The customer asked for a person",
        "reason_complaint": "Complaint",
        "reason_not_understood": "The bot did not understand",
        "reason_not_helpful": "The bot's answer did not help",
        "reason_transfer": "Transfer",
        "button_take": "Take",
        "button_resolve": "Resolve",
        "taken_by": "{agent} takes the conversation.",
        "already_taken": "Already taken by {agent}.",
        "resolved_by": "Resolved by {agent}{tag}.",
        "transferred": "{agent} put the conversation back in the queue.",
        "transferred_to": "{agent} transferred the conversation to {target}.",
        "not_an_agent": "{target} is not an agent: cannot transfer.",
        "not_open": "This conversation is no longer being handled.",
        "already_in_queue": "This conversation is already in the queue: transfer it to an "
        "agent, or take it.",
        "customer_unreachable": "The customer can no longer be reached; the message was not "
        "delivered.",
        "customer_left": "The customer left ({reason}).",
        "abandoned_desk": "Conversation #{id} abandoned ({reason}): please follow up with the "
        "customer.",
        "reminder": "Conversation #{id} has been waiting for {minutes} min.",
        "detractor_alert": "⚠️ Detractor: {customer} answered {score}/10 (conversation #{id}"
        "{agent}). Please follow up with this customer.",
        "detractor_comment": "Comment from {customer} (#{id}): {comment}",
        "note_saved": "Internal note saved (not sent to the customer).",
        "unknown_conversation": "Unknown conversation.",
        "title": "#{id} · {customer}{topic}",
        "erased_customer": "erased customer (GDPR)",
        # follow-ups (closing the loop)
        "followup_csat_alert": "⚠️ Unhappy customer: {customer} answered {face} ({rating}/5) "
        "(conversation #{id}{agent}). Please follow up with this customer.",
        "followup_line": "Follow-up #{id} — owner: {owner}; contact them before {due}.",
        "followup_unassigned": "nobody yet (take it)",
        "followup_reminder": "⏰ Follow-up #{id} is overdue: {customer} ({scores}) has not been "
        "contacted (due {due}); owner: {owner}.",
        "followup_button_take": "Take",
        "followup_button_contacted": "Contacted",
        "followup_button_resolved": "Resolved",
        "followup_button_unreachable": "Unreachable",
        "followup_taken": "Follow-up #{id}: taken by {agent}.",
        "followup_contacted": "Follow-up #{id}: customer contacted by {agent}.",
        "followup_resolved": "Follow-up #{id}: resolved by {agent}.",
        "followup_unreachable": "Follow-up #{id}: customer unreachable ({agent}).",
        "followup_note_saved": "Follow-up #{id}: note saved.",
        "followup_ask_note": "Add the outcome: {command} {id} note <text>.",
        "followup_unknown": "Unknown follow-up #{id}.",
        "followup_closed": "Follow-up #{id} is already closed ({status}).",
        "followup_usage": "Usage: {command} ID take|contacted|resolved|unreachable|note [note]",
        "complaint_marked": "Conversation #{id} marked as a complaint by {agent}.",
        "complaint_already": "This conversation is already a complaint.",
        "complaint_none": "This conversation is not a complaint.",
        "complaint_unknown": "Unknown {field} “{given}”. Valid values: {valid}.",
        "complaint_field_cause": "cause",
        "complaint_field_category": "category",
        "complaint_field_solution": "solution",
        "complaint_menu": "Complaint #{id}: choose the root cause and the solution offered.",
        "complaint_set": "Complaint #{id}: {field} → {value} ({agent}).",
        "complaint_summary": "Complaint: cause {cause}, solution {solution}{note}.",
        "complaint_unset": "(not set)",
        "solution_refund": "Refund",
        "solution_partial_refund": "Partial refund",
        "solution_replacement": "Replacement",
        "solution_voucher": "Voucher",
        "solution_free_delivery": "Free delivery",
        "solution_mediation": "Mediation",
        "solution_none": "None",
        "handoff_queued": "I'm putting you through to a member of our team.",
        "queue_first": "You are next in the queue.",
        "queue_position": "You are number {position} in the queue.",
        "queue_wait": "Estimated wait: {wait}.",
        "queue_update": "Your place has changed.",
        "wait_few": "a few minutes",
        "wait_minutes": "about {minutes} minutes",
        "wait_hour": "about an hour",
        "wait_hours": "more than an hour",
        "presence_available": "{agent} is available: new conversations can be assigned to them.",
        "presence_available_closed": "{agent} is available (outside business hours: nothing "
        "is assigned before we reopen).",
        "presence_away": "{agent} is away: no more conversations are assigned to them.",
        "routed_to_you": "This conversation is assigned to you: please answer.",
        "agent_joined_unnamed": "A member of our team joined the conversation.",
        "escalated": "Conversation #{id} has been waiting for {minutes} min and nobody has "
        "taken it.",
        "an_agent": "A member of our team",
        "reply_customer": "dear customer",
        "saved_replies_list": "Saved replies ({command} SHORTCUT sends one; nothing is sent to "
        "the customer):\n{replies}",
        "saved_replies_none": "No saved replies: add some in replies.yaml (replies.path in "
        "config.yaml).",
        "saved_reply_unknown": 'No saved reply "{shortcut}".{close} {command} alone lists them.',
        "saved_reply_close": " Did you mean: {options}?",
        "context_first": "First contact",
        "context_count": "{count} earlier conversation(s)",
        "context_last": "last on {date}: {topic}",
        "context_scores": "last feedback: {scores}",
        "context_followup": "follow-up in progress ({status})",
    },
}

CSAT_FACES = ("😡", "🙁", "😐", "🙂", "😍")


class Texts:
    """Looks sentences up in the catalog, with config overrides, and formats them."""

    def __init__(
        self, default_language: str, overrides: Mapping[Any, Mapping[str, str]] | None = None
    ) -> None:
        self.default_language = default_language
        self._catalog = {
            lang: {**entries, **dict((overrides or {}).get(lang, {}))}
            for lang, entries in CATALOG.items()
        }

    def language_of(self, platform_code: str | None) -> str:
        """ "fr-FR", "en_GB", "fr" → a catalog language, else the default."""
        if platform_code:
            short = platform_code.replace("_", "-").split("-")[0].lower()
            if short in self._catalog:
                return short
        return self.default_language

    def get(self, lang: str, key: str, **values: Any) -> str:
        entries = self._catalog.get(lang) or self._catalog[self.default_language]
        text = entries[key]
        return text.format(**values) if values else text

    def when(self, lang: str, at: datetime) -> str:
        """ "lundi 30 novembre à 09:00" / "on Monday 30 November at 09:00"."""
        if lang == "fr":
            return format_datetime(at, "EEEE d MMMM 'à' HH:mm", tzinfo=at.tzinfo, locale="fr")
        return format_datetime(at, "'on' EEEE d MMMM 'at' HH:mm", tzinfo=at.tzinfo, locale="en")
