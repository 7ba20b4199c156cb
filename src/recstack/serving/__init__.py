"""Online two-stage recommendation: recall with a two-tower index, then rank with a CTR model.

``RecommendationService`` (framework-free, in ``service.py``) does the work over a ``Catalogue``
(``catalogue.py``); ``http.py`` puts a FastAPI app in front of it and serves the demo page in
``static/``.
"""

from recstack.serving.types import RecommendedItem, RecommendRequest, RecommendResponse, RequestError

__all__ = ["RecommendRequest", "RecommendResponse", "RecommendedItem", "RequestError"]
