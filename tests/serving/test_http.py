"""The HTTP contract of the recommendation service (FastAPI TestClient over tiny trained runs)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from recstack.serving.http import create_app
from recstack.serving.service import RecommendationService


@pytest.fixture(scope="module")
def client(service: RecommendationService) -> TestClient:
    return TestClient(create_app(service))


def _fields(response) -> list[list]:
    return [error["loc"] for error in response.json()["detail"]]


def test_recommend_returns_k_ranked_items_with_scores(client: TestClient, service: RecommendationService) -> None:
    response = client.post("/recommend", json={"user_id": 1, "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == 1 and body["fallback"] is None
    items = body["items"]
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5]
    assert all(set(i) == {"item_id", "title", "genres", "recall_score", "rank_score", "rank"} for i in items)
    rank_scores = [i["rank_score"] for i in items]
    assert rank_scores == sorted(rank_scores, reverse=True) and all(0 < s < 1 for s in rank_scores)
    seen = set(service.catalogue.histories.get(1).tolist())
    assert not seen & {i["item_id"] for i in items}  # exclude_seen is on by default
    assert items[0]["title"] == f"Movie {items[0]['item_id']}"


def test_exclude_seen_false_may_return_history_items(client: TestClient, service: RecommendationService) -> None:
    history = service.catalogue.histories.get(1).tolist()
    body = client.post("/recommend", json={"user_id": 1, "k": 40, "exclude_seen": False}).json()
    assert set(history) <= {i["item_id"] for i in body["items"]}  # all 40 items come back


def test_batch_request_answers_each_request_in_order(client: TestClient) -> None:
    single = client.post("/recommend", json={"user_id": 2, "k": 3}).json()
    response = client.post("/recommend", json={"requests": [{"user_id": 2, "k": 3}, {"user_id": 3, "k": 2}, {"history": [], "k": 4}]})
    assert response.status_code == 200
    answers = response.json()["responses"]
    assert [a["user_id"] for a in answers] == [2, 3, None]
    assert [len(a["items"]) for a in answers] == [3, 2, 4]
    assert [i["item_id"] for i in answers[0]["items"]] == [i["item_id"] for i in single["items"]]
    assert answers[0]["items"][0]["rank_score"] == pytest.approx(single["items"][0]["rank_score"], abs=1e-6)
    assert answers[2]["fallback"] == "popular"


def test_raw_features_and_history_override_stored_ones(client: TestClient) -> None:
    stored = client.post("/recommend", json={"user_id": 4, "k": 5}).json()
    raw = client.post("/recommend", json={"user_id": 4, "k": 5, "features": {"age": 70, "gender": "F"}, "history": [1, 2, 3]}).json()
    assert raw["fallback"] is None
    assert {1, 2, 3}.isdisjoint(i["item_id"] for i in raw["items"])
    assert [i["rank_score"] for i in raw["items"]] != [i["rank_score"] for i in stored["items"]]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_id": 1, "colour": "red"}, "colour"),
        ({"requests": [{"user_id": 1, "nope": 1}]}, "nope"),
        ({"requests": [], "extra": 1}, "extra"),
        ({"user_id": 1, "features": {"shoe_size": 44}}, "shoe_size"),
    ],
)
def test_unknown_fields_are_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == 422
    assert any(field in loc for loc in _fields(response)), response.json()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_id": 1, "k": "ten"}, "k"),
        ({"user_id": 1, "exclude_seen": "yes"}, "exclude_seen"),
        ({"user_id": 1, "history": "1,2"}, "history"),
        ({"user_id": [1]}, "user_id"),
        ({"user_id": 1, "features": {"age": "old"}}, "age"),
        ({"user_id": 1, "history": ["not-an-item"]}, "history"),
    ],
)
def test_wrong_types_are_422(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == 422
    assert any(field in loc for loc in _fields(response)), response.json()


@pytest.mark.parametrize("k", [0, -1, 101])
def test_k_out_of_range_is_422(client: TestClient, k: int) -> None:
    response = client.post("/recommend", json={"user_id": 1, "k": k})
    assert response.status_code == 422
    assert any("k" in loc for loc in _fields(response))


def test_empty_history_falls_back_to_popular_items(client: TestClient, service: RecommendationService) -> None:
    body = client.post("/recommend", json={"user_id": 1, "history": [], "k": 5}).json()
    popular, _ = service.catalogue.histories.popular()
    assert body["fallback"] == "popular"
    assert [i["item_id"] for i in body["items"]] == popular[:5].tolist()
    assert all(i["rank_score"] is None for i in body["items"])


def test_unknown_user_falls_back_to_popular_items(client: TestClient, service: RecommendationService) -> None:
    body = client.post("/recommend", json={"user_id": 123456, "k": 3}).json()
    popular, _ = service.catalogue.histories.popular()
    assert body["fallback"] == "popular" and body["user_id"] == 123456
    assert [i["item_id"] for i in body["items"]] == popular[:3].tolist()


def test_unknown_user_with_a_history_is_personalised(client: TestClient) -> None:
    body = client.post("/recommend", json={"user_id": 123456, "history": [5, 10], "features": {"age": 30}, "k": 3}).json()
    assert body["fallback"] is None and len(body["items"]) == 3


def test_items_endpoint(client: TestClient) -> None:
    item = client.get("/items/3")
    assert item.status_code == 200 and item.json()["title"] == "Movie 3"
    assert client.get("/items/99999").status_code == 404
    assert client.get("/items/abc").status_code == 404


def test_users_endpoints_give_ids_and_history_with_titles(client: TestClient, service: RecommendationService) -> None:
    ids = client.get("/users").json()["user_ids"]
    assert 1 in ids
    user = client.get("/users/1").json()
    history = service.catalogue.histories.get(1).tolist()
    assert [h["item_id"] for h in user["history"]] == history
    assert user["history"][0]["title"] == f"Movie {history[0]}"
    assert client.get("/users/99999").status_code == 404


def test_health_openapi_and_demo_page(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "/recommend" in schema["paths"] and "RecommendBody" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
