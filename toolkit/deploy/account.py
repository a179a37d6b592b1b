"""What a new account needs before the first stack: the ECS service-linked role.

ECS creates ``AWSServiceRoleForECS`` itself on first use, but a cluster and its services created
in one CloudFormation run can race that creation and fail ("Unable to assume the service linked
role"). ``celery-ecs deploy`` therefore checks for the role and creates it (``iam:GetRole`` and
``iam:CreateServiceLinkedRole`` on that role, with ``iam:AWSServiceName = ecs.amazonaws.com``);
a dry run only says that it would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from toolkit.deploy.stack import DeployError
from toolkit.errors import aws_error_code

ECS_ROLE = "AWSServiceRoleForECS"
ECS_SERVICE = "ecs.amazonaws.com"
CREATE_COMMAND = f"aws iam create-service-linked-role --aws-service-name {ECS_SERVICE}"

RoleState = Literal["present", "created", "missing", "unknown"]


def ensure_ecs_service_linked_role(
    iam: Any, *, create: bool, echo: Callable[[str], None]
) -> RoleState:
    """``present``, ``created`` (when ``create``), ``missing`` (not created), or ``unknown``
    (GetRole denied: one line says what to run if this is the account's first ECS use)."""
    try:
        iam.get_role(RoleName=ECS_ROLE)
        return "present"
    except Exception as exc:
        code = aws_error_code(exc)
        if code in {"AccessDenied", "AccessDeniedException"}:
            echo(f"note: cannot check for the ECS service-linked role ({code}); on an account's "
                 f"first use of ECS create it first: {CREATE_COMMAND}")
            return "unknown"
        if code != "NoSuchEntity":
            raise
    if not create:
        echo(f"note: the ECS service-linked role {ECS_ROLE} does not exist yet; deploy creates "
             f"it (or run: {CREATE_COMMAND})")
        return "missing"
    try:
        iam.create_service_linked_role(AWSServiceName=ECS_SERVICE)
    except Exception as exc:
        code = aws_error_code(exc)
        if code is None:
            raise
        if code == "EntityAlreadyExists" or (code == "InvalidInput" and "taken" in str(exc)):
            return "present"  # created in between (by ECS itself, or another deploy)
        raise DeployError(f"cannot create the ECS service-linked role {ECS_ROLE} ({code}): "
                          f"run {CREATE_COMMAND} with a principal allowed to") from None
    echo(f"created the ECS service-linked role {ECS_ROLE}")
    return "created"
